"""`crm-sync ui`: the local sandbox plus `dagster dev`, wired together for a first look."""

from __future__ import annotations

import os
import subprocess  # nosec B404  # runs dagster dev with a fixed argument list
import sys
from pathlib import Path

from crm_sync import paths
from crm_sync.project import DEPLOYMENT_ENV, SANDBOX_URL_ENV
from crm_sync.sandbox.server import sandbox_process
from crm_sync.sandbox.state import TOKEN_ENV, tokens_from_env


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


def code_location() -> tuple[list[str], Path]:
    """What `dagster dev` loads, and from where: the clone's workspace.yaml in the clone, or,
    once installed, crm_sync.definitions for the syncs.yaml of the working directory."""
    checkout = paths.source_checkout()
    if checkout is not None:
        return ["-w", str(checkout / "workspace.yaml")], checkout
    return ["-m", "crm_sync.definitions"], paths.project_dir()


def run_ui(port: int = 3000, sandbox_port: int = 8765) -> int:
    target, root = code_location()
    home = root / ".crm_sync" / "dagster_home"
    prepare_home(home)
    env = {"DAGSTER_HOME": str(home)}
    # The tokens the sandbox accepts (its own, or yours from the environment), as variables:
    # the code location reads them with dg.EnvVar.
    env.update({TOKEN_ENV[crm]: token for crm, token in tokens_from_env().items()})
    with sandbox_process(root / ".crm_sync" / "sandbox.sqlite", port=sandbox_port) as url:
        # The code location picks its resources from these (crm_sync/project.py
        # `deployment_resources`): every CRM at this sandbox.
        env.update({DEPLOYMENT_ENV: "sandbox", SANDBOX_URL_ENV: url})
        print(f"CRM sandbox at {url}; Dagster UI at http://127.0.0.1:{port}", flush=True)
        cmd = [sys.executable, "-m", "dagster", "dev", *target, "-h", "127.0.0.1", "-p", str(port)]
        try:
            # B603 (nosec below): a fixed argument list (dagster dev), no shell
            return subprocess.call(cmd, env={**os.environ, **env}, cwd=root)  # nosec B603
        except KeyboardInterrupt:
            return 0
