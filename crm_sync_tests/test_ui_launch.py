"""`crm-sync ui` (what `make ui` runs): the sandbox and `dg dev` of the clone's dg project, on
127.0.0.1, serving the code location `crm_sync`, without `dagster dev`'s "superseded by dg dev"
warning. The process group is stopped afterwards (crm_sync_tests/processes.py)."""

from __future__ import annotations

import os
import subprocess  # nosec B404  # our own CLI, fixed argument list
import sys
import time

import httpx
import pytest

from crm_sync.devtools.ui import dev_command, is_dg_project
from crm_sync.sandbox.server import free_port
from crm_sync.spec import PROJECT_ROOT
from crm_sync_tests.processes import stop_process_group

# the webserver answering, its code location loaded: ~35 s on an idle machine; on a loaded
# one (2 shared cores, other tests running) as long as test_ui_browser.py allows dagster dev
UI_START_SECONDS = 180
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"

pytestmark = pytest.mark.timeout(UI_START_SECONDS + 60)


def test_the_clone_is_a_dg_project_served_by_dg_dev_in_this_environment(tmp_path):
    assert is_dg_project(PROJECT_ROOT)
    command = dev_command(PROJECT_ROOT, 3000)
    assert command[:4] == [sys.executable, "-m", "dagster_dg_cli.cli", "dev"]
    assert "--use-active-venv" in command and command[-4:] == ["-h", "127.0.0.1", "-p", "3000"]
    # an installed package, in a project folder that is no dg project: dagster dev of
    # crm_sync.definitions
    assert dev_command(tmp_path, 3000)[1:5] == ["-m", "dagster", "dev", "-m"]


def _locations(url: str) -> dict[str, str]:
    answer = httpx.post(f"{url}/graphql", json={"query": LOCATIONS}, timeout=5).json()
    entries = answer["data"]["workspaceOrError"].get("locationEntries", [])
    return {entry["name"]: entry["loadStatus"] for entry in entries}


def _wait_for_location(url: str, proc: subprocess.Popen, log) -> dict[str, str]:
    deadline = time.monotonic() + UI_START_SECONDS
    locations: dict[str, str] = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"crm-sync ui exited ({proc.returncode}):\n{log.read_text()}"
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                locations = _locations(url)
                if locations.get("crm_sync") == "LOADED":
                    return locations
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"no loaded code location crm_sync within {UI_START_SECONDS}s ({locations}):\n"
                f"{log.read_text()[-4000:]}")


@pytest.mark.slow  # tens of seconds: a whole demo / a fresh venv / dg dev (CI runs it)
def test_crm_sync_ui_serves_the_code_location_crm_sync_with_dg_dev(tmp_path):
    port, sandbox_port = free_port(), free_port()
    home = tmp_path / "dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(  # nosec B603  # fixed argument list, no shell
            [sys.executable, "-m", "crm_sync.cli", "ui", "--workdir", str(tmp_path / "work"),
             "--port", str(port), "--sandbox-port", str(sandbox_port)],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        locations = _wait_for_location(f"http://127.0.0.1:{port}", proc, log)
        assert locations == {"crm_sync": "LOADED"}
        assert httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/health").status_code == 200
    finally:
        stop_process_group(proc)
    output = log.read_text()
    assert "superseded" not in output and "Use 'dg dev' instead" not in output, output
    assert (home / "dagster.yaml").is_file()  # the instance of DAGSTER_HOME, INSTANCE_CONFIG
    assert (tmp_path / "work" / "sandbox.sqlite").is_file()  # the sandbox of --workdir
