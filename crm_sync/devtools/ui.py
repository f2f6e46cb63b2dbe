"""`crm-sync ui`: the local sandbox plus `dg dev` (the Dagster UI), wired together for a first
look."""

from __future__ import annotations

import importlib.util
import os
import subprocess  # nosec B404  # runs dg dev / dagster dev with a fixed argument list
import sys
from pathlib import Path

from crm_sync import paths
from crm_sync.devtools.local import INSTANCE_CONFIG, local_files, prepare_home  # noqa: F401
from crm_sync.project import DEPLOYMENT_ENV, SANDBOX_URL_ENV
from crm_sync.sandbox.server import sandbox_process
from crm_sync.sandbox.state import TOKEN_ENV, tokens_from_env


def is_dg_project(root: Path) -> bool:
    """A dg project: its pyproject.toml has a `[tool.dg]` table (the clone's does)."""
    pyproject = root / "pyproject.toml"
    return pyproject.is_file() and "[tool.dg]" in pyproject.read_text().splitlines()


def dev_command(root: Path, port: int) -> list[str]:
    """The command that serves the UI: `dg dev` in a dg project (its code location `crm_sync`,
    from [tool.dg.project]), with this Python environment (`--use-active-venv`: no project
    virtualenv is looked for, nothing installed; in a project dg runs the code server with
    the Python it runs on); else `dagster dev` for the clone's workspace.yaml or, once
    installed outside a dg project, crm_sync.definitions for the syncs.yaml of `root`."""
    where = ["-h", "127.0.0.1", "-p", str(port)]
    if is_dg_project(root) and importlib.util.find_spec("dagster_dg_cli") is not None:
        return [sys.executable, "-m", "dagster_dg_cli.cli", "dev", "--use-active-venv", *where]
    checkout = paths.source_checkout()
    target = ["-w", str(checkout / "workspace.yaml")] if checkout == root else \
        ["-m", "crm_sync.definitions"]
    return [sys.executable, "-m", "dagster", "dev", *target, *where]


def run_ui(port: int = 3000, sandbox_port: int = 8765, workdir: Path | None = None) -> int:
    """The sandbox, then the UI, on the instance, sandbox database and store the demo uses
    (crm_sync/devtools/local.py; `workdir` as the demo's --workdir)."""
    root = paths.source_checkout() or paths.project_dir()
    files = local_files(workdir)
    prepare_home(files.home)
    env = {"DAGSTER_HOME": str(files.home), **files.store_env()}
    # The tokens the sandbox accepts (its own, or yours from the environment), as variables:
    # the code location reads them with dg.EnvVar.
    env.update({TOKEN_ENV[crm]: token for crm, token in tokens_from_env().items()})
    with sandbox_process(files.sandbox_db, port=sandbox_port) as url:
        # The code location picks its resources from these (crm_sync/project.py
        # `deployment_resources`): every CRM at this sandbox.
        env.update({DEPLOYMENT_ENV: "sandbox", SANDBOX_URL_ENV: url})
        print(f"CRM sandbox at {url}; Dagster UI at http://127.0.0.1:{port} "
              f"(instance {files.home})", flush=True)
        try:
            # B603 (nosec below): a fixed argument list (dg dev / dagster dev), no shell
            return subprocess.call(dev_command(root, port), env={**os.environ, **env},
                                   cwd=root)  # nosec B603
        except KeyboardInterrupt:
            return 0
