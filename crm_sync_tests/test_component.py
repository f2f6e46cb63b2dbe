"""The CrmSync Component (issue 18): a Dagster project of its own that installed crm_sync lists,
scaffolds, checks and runs it with `dg`; a wrong field reads as in syncs.yaml, naming the
defs.yaml and the field; key_prefix keeps two components apart; this clone's code location
`crm_sync` loads its syncs through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml

import crm_sync
from crm_sync.component_scaffold import EXAMPLE_DAY, NOTES, render_defs_yaml
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import PROJECT_ROOT, SyncSpec
from crm_sync_tests.conftest import stored
from crm_sync_tests.installed import clean_env, install_package

DG = Path(sys.executable).with_name("dg")  # the environment's own `dg` (dagster-dg-cli)
TYPE = "crm_sync.CrmSync"
HOST_PYPROJECT = """\
[project]
name = "host_project"
version = "0.1.0"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "host_project"
"""
# What `dg scaffold project` writes as the project's code location.
HOST_DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs():
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


def host_project(root: Path) -> Path:
    """A Dagster project that owes nothing to this clone: its pyproject.toml, its package and
    its empty defs folder."""
    (root / "host_project" / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(HOST_PYPROJECT)
    (root / "host_project" / "__init__.py").write_text("")
    (root / "host_project" / "defs" / "__init__.py").write_text("")
    (root / "host_project" / "definitions.py").write_text(HOST_DEFINITIONS)
    return root


def run_dg(dg_command: list[str], project: Path, env: dict, timeout: int = 240):
    env = {**env, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(dg_command, cwd=project, env=env, capture_output=True, text=True,
                          timeout=timeout)


def shared_dg(*args: str, project: Path, **extra):
    """`dg` of this environment in `project`, with this clone and the project importable."""
    env = clean_env(PYTHONPATH=f"{PROJECT_ROOT}{os.pathsep}{project}", **extra)
    return run_dg([str(DG), *args], project, env)


# --- a project of its own, crm_sync installed from the wheel --------------------------------

@pytest.mark.slow  # tens of seconds: a whole demo / a fresh venv / dg dev (CI runs it)
def test_a_fresh_project_lists_scaffolds_checks_and_syncs_the_component(
        tmp_path, sandbox, sandbox_url):
    python, venv = install_package(tmp_path)
    project = host_project(tmp_path / "host")
    # The installed environment's `dg`: its python sees the wheel's entry point.
    dg_cmd = [str(python), "-c", "import sys; from dagster_dg_cli.cli import main; "
              "sys.argv[0] = 'dg'; sys.exit(main())"]
    env = clean_env(PYTHONPATH=str(project), DAGSTER_HOME=str(tmp_path / "home"),
                    SUPERLEAP_BASE_URL=sandbox_url, SUPERLEAP_TOKEN=DEFAULT_TOKENS["superleap"])
    (tmp_path / "home").mkdir()

    listed = run_dg([*dg_cmd, "list", "components"], project, env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert TYPE in listed.stdout

    scaffold = run_dg([*dg_cmd, "scaffold", "defs", TYPE, "my_syncs"], project, env)
    assert scaffold.returncode == 0, scaffold.stdout + scaffold.stderr[-3000:]
    defs_yaml = project / "host_project" / "defs" / "my_syncs" / "defs.yaml"
    written = yaml.safe_load(defs_yaml.read_text())
    assert written["type"] == TYPE
    assert set(written["attributes"]["syncs"][0]) == set(SyncSpec.model_fields)

    check = run_dg([*dg_cmd, "check", "defs"], project, env)
    assert check.returncode == 0, check.stdout + check.stderr[-3000:]

    launch = run_dg([*dg_cmd, "launch", "--assets", "*", "--partition", EXAMPLE_DAY],
                    project, env, timeout=300)
    assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-4000:]
    records = stored(sandbox, "superleap", "lead")
    assert sorted(r["external_id"] for r in records) == ["L-1", "L-2"]  # that day's rows
    assert (project / ".crm_sync" / "crm_sync.sqlite").is_file()  # the project's own store
    assert not list(venv.rglob("*.sqlite")), "nothing of the project's may land in the venv"


# --- the scaffold ---------------------------------------------------------------------------

def test_the_scaffold_writes_every_field_of_a_sync_with_its_default_and_a_comment():
    text = render_defs_yaml(TYPE)
    sync = yaml.safe_load(text)["attributes"]["syncs"][0]
    assert list(sync) == list(SyncSpec.model_fields)  # every field, in the model's order
    assert set(NOTES) == set(SyncSpec.model_fields)
    for name, info in SyncSpec.model_fields.items():
        if not info.is_required() and name not in ("description", "source_connection",
                                                   "fields"):
            assert sync[name] == info.get_default(call_default_factory=True), name
        line = next(line for line in text.splitlines() if line.strip(" -").startswith(name))
        assert "#" in line, f"{name}: no comment"


# --- errors name the file and the field -----------------------------------------------------

BAD_SYNC = """\
type: crm_sync.CrmSync
attributes:
  syncs:
    - name: x
      source: leads
      source_key: lead_id
      crm: superleap
      object: lead
      matching_key: id
      fields:
        name: {column: name, type: text}
"""


def test_a_wrong_field_in_a_defs_yaml_fails_dg_check_naming_the_file_and_the_field(tmp_path):
    project = host_project(tmp_path / "host")
    defs_yaml = project / "host_project" / "defs" / "leads" / "defs.yaml"
    defs_yaml.parent.mkdir()
    defs_yaml.write_text(BAD_SYNC)

    schema = shared_dg("check", "yaml", project=project)
    assert schema.returncode == 0, schema.stdout + schema.stderr  # dg's schema accepts it
    check = shared_dg("check", "defs", project=project)
    out = check.stdout + check.stderr
    assert check.returncode != 0
    assert f"defs.yaml {defs_yaml} is invalid" in out
    assert "sync 'x': fields.name.type: Input should be 'string'" in out


def test_spec_file_and_inline_syncs_together_are_refused(tmp_path):
    project = host_project(tmp_path / "host")
    folder = project / "host_project" / "defs" / "both"
    folder.mkdir()
    (folder / "defs.yaml").write_text(BAD_SYNC.replace("attributes:\n",
                                                       "attributes:\n  spec_file: s.yaml\n"))
    check = shared_dg("check", "defs", project=project)
    assert check.returncode != 0
    assert "spec_file or start_date, connections, syncs, not both" in check.stdout + check.stderr


# --- key_prefix -----------------------------------------------------------------------------

KEYS_SCRIPT = """\
import json
from pathlib import Path
import dagster as dg
defs = dg.load_from_defs_folder(path_within_project=Path.cwd())
repo = defs.get_repository_def()
print(json.dumps({
    "assets": sorted(k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()),
    "jobs": sorted(j.name for j in repo.get_all_jobs()),
    "schedules": sorted(s.name for s in repo.schedule_defs),
    "sensors": sorted(s.name for s in repo.sensor_defs),
}))
"""


def _scaffold_with_prefix(project: Path, name: str, prefix: str) -> None:
    folder = project / "host_project" / "defs" / name
    CrmSyncScaffold().scaffold(dg.ScaffoldRequest(
        type_name=TYPE, target_path=folder, scaffold_format="yaml", project_root=project,
        params=None))
    text = (folder / "defs.yaml").read_text()
    (folder / "defs.yaml").write_text(text.replace("# key_prefix: crm ", f"key_prefix: {prefix}"))


def CrmSyncScaffold():  # noqa: N802 - the scaffolder `dg scaffold defs` itself calls
    from dagster.components.scaffold.scaffold import get_scaffolder

    return get_scaffolder(crm_sync.CrmSync)


def test_key_prefix_puts_every_key_and_name_under_it_and_two_components_coexist(tmp_path):
    project = host_project(tmp_path / "host")
    _scaffold_with_prefix(project, "team_a", "team_a")
    _scaffold_with_prefix(project, "team_b", '["b", "crm"]')
    # the host's own asset named like crm_sync's
    (project / "host_project" / "defs" / "own.py").write_text(textwrap.dedent("""\
        import dagster as dg

        @dg.asset
        def quarantine():
            return 1
    """))
    check = shared_dg("check", "defs", project=project)
    assert check.returncode == 0, check.stdout + check.stderr[-4000:]

    env = clean_env(PYTHONPATH=f"{PROJECT_ROOT}{os.pathsep}{project}")
    done = subprocess.run([sys.executable, "-c", KEYS_SCRIPT], cwd=project, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    names = ["example_leads", "example_leads_replay", "quarantine",
             "source_example_data_leads", "validated_example_leads"]
    assert found["assets"] == sorted(["quarantine", *(f"team_a/{n}" for n in names),
                                      *(f"b/crm/{n}" for n in names)])
    assert {"team_a__sync_example_leads", "b__crm__sync_example_leads",
            "team_a__replay_quarantine", "b__crm__replay_quarantine"} <= set(found["jobs"])
    assert found["sensors"] == ["b__crm__crm_sync_alert_webhook",  # pipeline/alert_sensor.py
                                "b__crm__crm_sync_quarantine_automation",  # automation.py
                                "b__crm__example_leads_on_source_change",
                                "team_a__crm_sync_alert_webhook",
                                "team_a__crm_sync_quarantine_automation",
                                "team_a__example_leads_on_source_change"]


def test_a_prefixed_sync_materializes_against_the_sandbox(tmp_path, sandbox, sandbox_url):
    from crm_sync.component import CrmSync
    from crm_sync.project import sandbox_resources

    folder = tmp_path / "defs" / "crm"
    CrmSyncScaffold().scaffold(dg.ScaffoldRequest(
        type_name=TYPE, target_path=folder, scaffold_format="yaml", project_root=tmp_path,
        params=None))
    attributes = yaml.safe_load((folder / "defs.yaml").read_text())["attributes"]
    component = CrmSync(**attributes, key_prefix="crm")
    spec = component.load_spec(folder)
    defs = crm_sync.build_defs(spec, key_prefix="crm", resources=sandbox_resources(
        sandbox_url, store=tmp_path / "store.sqlite", tokens=DEFAULT_TOKENS))
    job = defs.get_job_def("crm__sync_example_leads")
    result = job.execute_in_process(partition_key=EXAMPLE_DAY,
                                    instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} \
        >= {"crm/source_example_data_leads", "crm/validated_example_leads", "crm/example_leads"}
    assert sorted(r["external_id"] for r in stored(sandbox, "superleap", "lead")) == \
        ["L-1", "L-2"]


# --- this clone's code location -------------------------------------------------------------

def test_the_clone_loads_its_syncs_through_the_component_with_the_same_keys():
    import crm_sync.definitions

    before = crm_sync.build_defs().get_repository_def()
    after = crm_sync.definitions.load_defs().get_repository_def()
    assert after.asset_graph.get_all_asset_keys() == before.asset_graph.get_all_asset_keys()
    assert sorted(j.name for j in after.get_all_jobs()) == \
        sorted(j.name for j in before.get_all_jobs())
    tree = dg.ComponentTree.from_module(defs_module=crm_sync.defs, project_root=PROJECT_ROOT)
    assert [c.spec_file for c in tree.get_all_components(of_type=crm_sync.CrmSync)] == \
        [f"{PROJECT_ROOT}/syncs.yaml"]  # `{{ context.project_root }}/syncs.yaml`
    assert yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())["load_from"][0][
        "python_module"]["location_name"] == "crm_sync"


def test_the_clones_spec_file_gives_way_to_crm_sync_spec(tmp_path, monkeypatch):
    import crm_sync.definitions

    spec = tmp_path / "other.yaml"
    spec.write_text(textwrap.dedent(BAD_SYNC.split("attributes:\n", 1)[1])
                    .replace("type: text", "type: string"))
    monkeypatch.setenv("CRM_SYNC_SPEC", str(spec))
    keys = crm_sync.definitions.load_defs().get_repository_def().asset_graph.get_all_asset_keys()
    assert dg.AssetKey("x") in keys and dg.AssetKey("leads_to_superleap") not in keys


def test_the_clones_code_location_is_crm_sync_for_dagster_and_dg():
    env = clean_env(PYTHONPATH=str(PROJECT_ROOT))
    validate = run_dg([str(Path(sys.executable).with_name("dagster")), "definitions",
                       "validate", "-w", "workspace.yaml"], PROJECT_ROOT, env)
    assert validate.returncode == 0, validate.stderr[-3000:]
    assert "Validation successful for code location crm_sync." in validate.stdout
    check = run_dg([str(DG), "check", "defs"], PROJECT_ROOT, env)
    assert check.returncode == 0, check.stdout + check.stderr[-3000:]


def test_importing_crm_sync_stays_cheap():
    code = "import sys, crm_sync; sys.exit(1 if 'dagster' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
