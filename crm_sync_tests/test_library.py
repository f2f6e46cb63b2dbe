"""crm_sync as a library: the pipeline loads without the emulator, and a project that installs
the package (not editable) builds its Definitions from its own spec, paths in that project."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import PROJECT_ROOT
from crm_sync_tests.conftest import stored
from crm_sync_tests.installed import clean_env, install_package


def test_importing_the_definitions_loads_no_sandbox_or_bench_module():
    code = ("import sys, crm_sync.definitions\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('crm_sync.sandbox', "
            "'crm_sync.devtools.bench', 'starlette', 'uvicorn')))\n"
            "print(bad)\n"
            "sys.exit(1 if bad else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"loaded: {done.stdout.strip()} {done.stderr[-2000:]}"


def test_client_and_sandbox_read_the_same_token_variables():
    # Two copies on purpose (the sandbox shares no code with the client); a shell that exports
    # the variables configures both sides only while they agree.
    from crm_sync.connectors import TOKEN_ENV
    from crm_sync.sandbox.app import TOKEN_ENV as SANDBOX_TOKEN_ENV

    assert TOKEN_ENV == SANDBOX_TOKEN_ENV


# --- installed as a library ------------------------------------------------------------------

DAY = "2026-11-02"
PROJECT_SPEC = f"""\
start_date: "2026-11-01"
syncs:
  - name: prospects_to_superleap
    source: prospects
    source_key: prospect_id
    crm: superleap
    object: lead
    matching_key: id
    fields:
      name: {{column: name, required: true}}
      email: {{column: email, type: email}}
      external_id: prospect_id
"""
PROJECT_ROWS = ["prospect_id,name,email,updated_at",
                f"P-1,Ada Lovelace,ada@example.com,{DAY}T08:00:00Z",
                f"P-2,Alan Turing,alan@example.com,{DAY}T09:30:00Z",
                f"P-3,,nameless@example.com,{DAY}T10:00:00Z",   # quarantined: no name
                "P-4,Grace Hopper,grace@example.com,2026-11-03T10:00:00Z"]  # another day

# Runs in the new virtual environment, in the project folder: the project's own definitions.
PROJECT_SCRIPT = f"""\
import json, sys
import dagster as dg
import crm_sync

defs = crm_sync.build_defs(spec="syncs.yaml", data_dir="data")  # relative: in the project
assets = [a for a in defs.assets if a.partitions_def is not None]
result = dg.materialize(assets, partition_key="{DAY}", resources=defs.resources)
import crm_sync.definitions  # the default code location reads this project's syncs.yaml
emulator_loaded = sorted(m for m in sys.modules if m.startswith("crm_sync.sandbox"))
from crm_sync.devtools.demo import demo_files  # the demo starts the sandbox: imported last
print(json.dumps({{
    "package": crm_sync.__file__, "success": result.success,
    "store": defs.resources["store"].path,
    "default_syncs": [s.name for s in crm_sync.spec.load_spec().syncs],
    "default_store": crm_sync.definitions.defs.resources["store"].path,
    "demo_files": [str(p) for p in demo_files()],
    "emulator_loaded": emulator_loaded,
}}))
"""


def test_installed_package_builds_a_projects_definitions_and_syncs_a_partition(
        tmp_path, sandbox, sandbox_url):
    python, venv = install_package(tmp_path)
    # The sandbox's object fixtures (package-data) are in the wheel, every one of them.
    shipped = {p.relative_to(p.parents[2]) for p in venv.rglob("sandbox/fixtures/*/*.json")}
    fixtures = PROJECT_ROOT / "crm_sync" / "sandbox" / "fixtures"
    assert shipped and \
        shipped == {p.relative_to(fixtures.parent) for p in fixtures.glob("*/*.json")}

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "syncs.yaml").write_text(PROJECT_SPEC)
    (project / "data" / "prospects.csv").write_text("\n".join(PROJECT_ROWS) + "\n")
    run = subprocess.run([str(python), "-c", PROJECT_SCRIPT], cwd=project, timeout=300,
                         env=clean_env(SUPERLEAP_BASE_URL=sandbox_url,
                                       SUPERLEAP_TOKEN=DEFAULT_TOKENS["superleap"]),
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])

    assert Path(out["package"]).is_relative_to(venv)  # the installed copy, not the clone
    assert out["success"]
    records = stored(sandbox, "superleap", "lead")
    assert sorted(r["external_id"] for r in records) == ["P-1", "P-2"]

    store = project / ".crm_sync" / "crm_sync.sqlite"
    assert out["store"] == out["default_store"] == str(store)
    with sqlite3.connect(store) as conn:
        synced = {k for (k,) in conn.execute("SELECT source_key FROM sync_state")}
        quarantined = {k for (k,) in conn.execute("SELECT source_key FROM quarantine")}
    assert synced == {"P-1", "P-2"} and quarantined == {"P-3"}
    assert not list(venv.rglob("*.sqlite")), "nothing of the project's may land in the venv"
    assert out["default_syncs"] == ["prospects_to_superleap"]
    assert out["emulator_loaded"] == []

    # `crm-sync demo` from the installed package: the wheel carries the demo's own files.
    spec, data = (Path(p) for p in out["demo_files"])
    assert spec.is_relative_to(venv) and data.is_relative_to(venv)
    assert spec.read_bytes() == (PROJECT_ROOT / "syncs.yaml").read_bytes()
    for csv in (PROJECT_ROOT / "data").glob("*.csv"):
        assert (data / csv.name).read_bytes() == csv.read_bytes()

    # The sandbox's object fixtures ship in the wheel; `crm-sync schema pull` writes into the
    # project (crm_schemas/ next to its syncs.yaml), never into site-packages.
    installed = Path(out["package"]).parent / "sandbox" / "fixtures" / "superleap"
    assert sorted(p.name for p in installed.glob("*.json")) == sorted(
        p.name for p in (PROJECT_ROOT / "crm_sync" / "sandbox" / "fixtures" / "superleap")
        .glob("*.json"))
    pull = subprocess.run([str(python), "-m", "crm_sync.cli", "schema", "pull"], cwd=project,
                          timeout=300, capture_output=True, text=True,
                          env=clean_env(SUPERLEAP_BASE_URL=sandbox_url,
                                        SUPERLEAP_TOKEN=DEFAULT_TOKENS["superleap"]))
    assert pull.returncode == 0, pull.stdout + pull.stderr[-4000:]
    assert (project / "crm_schemas" / "superleap" / "lead.json").is_file()
    assert not list(venv.rglob("crm_schemas")), "pulled schemas belong to the project"
