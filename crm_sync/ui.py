"""`crm-sync ui`: the local sandbox plus `dagster dev`, wired together for a first look."""

from __future__ import annotations

import os
import subprocess  # nosec B404  # runs dagster dev with a fixed argument list
import sys

from crm_sync.sandbox.app import DEFAULT_TOKENS, TOKEN_ENV
from crm_sync.sandbox.server import sandbox_process
from crm_sync.spec import PROJECT_ROOT


# One slot per pool: each CRM destination has its own pool (`crm_<crm>`), so the runs of a
# parallel backfill extract and validate side by side but upsert into one CRM one at a time,
# and together never exceed the CRM's rate limit.
INSTANCE_CONFIG = """\
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 4
telemetry:
  enabled: false
"""


def prepare_home(home) -> None:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_CONFIG)


def run_ui(port: int = 3000, sandbox_port: int = 8765) -> int:
    home = PROJECT_ROOT / ".crm_sync" / "dagster_home"
    prepare_home(home)
    env = {"DAGSTER_HOME": str(home)}
    for crm, name in TOKEN_ENV.items():
        # Only the sandbox's own tokens are filled in; real ones come from your environment.
        env[name] = os.environ.get(name) or DEFAULT_TOKENS[crm]
    with sandbox_process(PROJECT_ROOT / ".crm_sync" / "sandbox.sqlite", port=sandbox_port) as url:
        for crm in TOKEN_ENV:
            env.setdefault(f"{crm.upper()}_BASE_URL", os.environ.get(f"{crm.upper()}_BASE_URL", url))
        print(f"CRM sandbox at {url}; Dagster UI at http://127.0.0.1:{port}", flush=True)
        cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
               "-h", "127.0.0.1", "-p", str(port)]
        try:
            # B603 (nosec below): a fixed argument list (dagster dev), no shell
            return subprocess.call(cmd, env={**os.environ, **env}, cwd=PROJECT_ROOT)  # nosec B603
        except KeyboardInterrupt:
            return 0
