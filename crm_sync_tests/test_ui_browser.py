"""The Dagster UI as users see it, in a real (headless) browser, following README's tour.

Starts `crm-sync ui`'s pair on free ports of 127.0.0.1 (the CRM sandbox, and `dg dev` serving
the code location `crm_sync`, loaded through the CrmSync Component) with a throwaway
DAGSTER_HOME, opens the UI in Debian's Chromium driven by Playwright, and clicks through the
tour: the code location, the asset graph, Materialize... on an upsert asset's own page (no
upstream selected: the upsert validates its partition itself), the quarantine asset updated
by its automation sensor after the run, the alert check of the upsert, a backfill of three
partitions, the upstream lineage of a linked sync. Screenshots go to test-artifacts/
(gitignored) with the `dg dev` log; README's come from here (docs/screenshots/).

Needs /usr/bin/chromium (`apt-get install -y --no-install-recommends chromium`, as .ci/run
does) and the `playwright` package (the test extra); never downloads a browser. Skipped, with
the reason, when either is missing. Minutes long: `slow` (CI runs it after the default suite).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from crm_sync.devtools.ui import dev_command
from crm_sync.devtools.local import prepare_home
from crm_sync.project import DEPLOYMENT_ENV, SANDBOX_URL_ENV
from crm_sync.sandbox.app import DEFAULT_TOKENS, TOKEN_ENV
from crm_sync.sandbox.server import free_port, sandbox_process
from crm_sync.spec import PROJECT_ROOT
from crm_sync_tests.processes import stop_process_group as _stop

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
# The sync materialized from its own page: no associations, so its rows need nothing else
SYNC, CRM, OBJECT = "companies_to_brevo", "brevo", "client"
LINKED = "projects_to_brevo"  # its lineage shows the companies it links to
PARTITION, BACKFILL = "2026-11-03", ("2026-11-04", "2026-11-06")
UI_START_SECONDS = 240  # dg dev on a slow shared machine: webserver, daemon, code server
RUN_SECONDS = 300  # one run: run worker + one process per step, each loading the definitions
BACKFILL_SECONDS = 900  # three runs; their upserts share the CRM's pool (one at a time)
AUTOMATION_SECONDS = 240  # the quarantine's automation sensor: a daemon tick, then its run


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return (f"Debian's chromium is not installed ({CHROMIUM} missing): run `apt-get install "
                f"-y --no-install-recommends chromium` (.ci/run does it when it can)")
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed: pip install -e '.[test]'"
    return None


pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(UI_START_SECONDS + 2 * RUN_SECONDS + BACKFILL_SECONDS
                        + AUTOMATION_SECONDS + 300),
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]


def _wait_for_webserver(proc, url: str) -> None:
    deadline = time.monotonic() + UI_START_SECONDS
    while True:
        if proc.poll() is not None:
            pytest.fail(f"dg dev exited with code {proc.returncode}; see "
                        f"{ARTIFACTS / 'dg-dev.log'}")
        try:
            if httpx.get(f"{url}/server_info", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the Dagster webserver did not answer within {UI_START_SECONDS} s; "
                        f"see {ARTIFACTS / 'dg-dev.log'}")
        time.sleep(1)


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    """(UI URL, sandbox URL): the sandbox and `dg dev`, as `crm-sync ui` starts them."""
    tmp = tmp_path_factory.mktemp("ui")
    home = tmp / "dagster_home"
    prepare_home(home)
    ARTIFACTS.mkdir(exist_ok=True)
    with sandbox_process(tmp / "sandbox.sqlite") as sandbox_url:
        env = {**os.environ, "DAGSTER_HOME": str(home),
               "CRM_SYNC_STORE": str(tmp / "crm_sync.sqlite"),
               DEPLOYMENT_ENV: "sandbox", SANDBOX_URL_ENV: sandbox_url}
        env.update({name: DEFAULT_TOKENS[crm] for crm, name in TOKEN_ENV.items()})
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (ARTIFACTS / "dg-dev.log").open("w")
        _STARTED[0] = time.monotonic()
        proc = subprocess.Popen(  # nosec B603: a fixed argument list
            dev_command(PROJECT_ROOT, port), cwd=PROJECT_ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_webserver(proc, url)
            yield url, sandbox_url
        finally:
            _stop(proc)
            log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    # Dagster's first-visit "Join the Dagster community" dialog: skip it whenever it shows.
    page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True),
                             lambda skip: skip.click())
    try:
        yield page
    finally:
        context.close()


_STARTED = [time.monotonic()]  # when `dg dev` was started


def _shot(page, name: str) -> None:
    """A screenshot in test-artifacts/, and when it was taken (printed with the test's output)."""
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    print(f"[{time.monotonic() - _STARTED[0]:6.1f} s] {name}.png")


def _graphql(ui: str, query: str) -> dict:
    answer = httpx.post(f"{ui}/graphql", json={"query": query}, timeout=30)
    answer.raise_for_status()
    return answer.json()["data"]


def _poll(what: str, seconds: float, probe):
    """probe() until it returns something truthy; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(3)
    pytest.fail(f"{what} did not happen within {seconds:.0f} s")


def _materializations(ui: str, asset: str) -> list[dict]:
    data = _graphql(ui, '{ assetOrError(assetKey: {path: ["%s"]}) { ... on Asset { '
                        'assetMaterializations(limit: 5) { runId timestamp } } } }' % asset)
    return (data["assetOrError"] or {}).get("assetMaterializations") or []


def _launch_from_asset_page(page, ui: str, asset: str, partitions: str, button: str) -> None:
    """The asset page's own Materialize...: type the partitions, launch."""
    from playwright.sync_api import expect

    page.goto(f"{ui}/assets/{asset}")
    page.get_by_role("button", name="Materialize…").click()
    # Dagster warns when an upstream asset was never materialized ("Are you sure?"): the
    # upsert validates its day itself, so confirm (README's tour says so).
    warning = page.get_by_role("dialog").filter(has_text="Are you sure?")
    dialog = page.get_by_role("dialog").filter(has=page.get_by_role("textbox"))
    expect(warning.or_(dialog).first).to_be_visible()
    if warning.is_visible():
        _shot(page, "upstream-warning")
        warning.get_by_role("button", name="Confirm").click()
    box = dialog.get_by_role("textbox").first  # the partition range: "2026-11-03"
    box.fill(partitions)
    box.press("Tab")
    launch = dialog.get_by_role("button", name=button)
    expect(launch).to_be_enabled()
    _shot(page, "launch-partition" if button == "Launch 1 run" else "launch-backfill")
    launch.click()
    expect(dialog).to_be_hidden()


def _open_latest_run(page, ui: str) -> str:
    from playwright.sync_api import expect

    page.goto(f"{ui}/runs")
    page.locator("a[href^='/runs/']").filter(has_text=re.compile(r"^[0-9a-f]{8}$")).first.click()
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    expect(status).to_be_visible(timeout=RUN_SECONDS * 1000)
    return status.inner_text()


def test_the_readme_tour_in_the_browser(dagster_ui, page):
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    ui, sandbox_url = dagster_ui
    try:
        _code_location_and_graph(page, ui)
        _materialize_from_the_asset_page(page, ui, sandbox_url)
        _quarantine_after_the_run(page, ui)
        _alert_check(page, ui)
        _backfill_three_partitions(page, ui)
        _lineage_of_a_linked_sync(page, ui)
    finally:
        _shot(page, "zz-last-page")


def _code_location_and_graph(page, ui: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{ui}/locations", timeout=UI_START_SECONDS * 1000)
    expect(page.get_by_text("Loaded", exact=True).first).to_be_visible(
        timeout=UI_START_SECONDS * 1000)  # the code location may still be loading
    expect(page.get_by_text("crm_sync", exact=True).first).to_be_visible()
    data = _graphql(ui, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
    assert [e["name"] for e in data["workspaceOrError"]["locationEntries"]] == ["crm_sync"]
    _shot(page, "01-code-location")
    page.goto(f"{ui}/asset-groups")
    for group in ("sources", "superleap", "hubspot", "salesforce", CRM, "quarantine"):
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    expect(page.get_by_text("fetching statuses")).to_have_count(0)
    _shot(page, "02-asset-groups")


def _materialize_from_the_asset_page(page, ui: str, sandbox_url: str) -> None:
    """Only the upsert asset is selected: it validates the partition itself (nothing
    upstream was ever materialized in this instance)."""
    from playwright.sync_api import expect

    _launch_from_asset_page(page, ui, SYNC, PARTITION, "Launch 1 run")
    status = _open_latest_run(page, ui)
    _shot(page, "04-run")
    assert status == "Success", "the run launched from the asset page failed: see 04-run.png"
    page.goto(f"{ui}/assets/{SYNC}")
    metadata = page.get_by_role("table").filter(has_text="rows_in")
    expect(metadata).to_be_visible()
    for key in ("rows_in", "created", "quarantined_by_error_code", "quarantine_preview"):
        expect(metadata.get_by_text(key, exact=True).first).to_be_attached()
    records = httpx.get(f"{sandbox_url}/_sandbox/records/{CRM}/{OBJECT}").json()["records"]
    assert records, "the run launched from the asset page wrote nothing to the sandbox"
    created = metadata.locator("tr").filter(has=page.get_by_text("created", exact=True))
    expect(created.locator("td").last).to_have_text(str(len(records)))
    page.set_viewport_size({"width": 1600, "height": 1500})  # the whole report
    metadata.evaluate("table => table.scrollIntoView({block: 'start'})")
    _shot(page, "run-report")
    page.set_viewport_size({"width": 1400, "height": 900})


def _quarantine_after_the_run(page, ui: str) -> None:
    """Its automation sensor (on by default) materializes the quarantine after the sync."""
    from playwright.sync_api import expect

    _poll("the quarantine's materialization after the sync", AUTOMATION_SECONDS,
          lambda: _materializations(ui, "quarantine"))
    page.goto(f"{ui}/assets/quarantine")
    # two tables: its Columns (dagster/column_schema) and the materialization's metadata
    metadata = page.get_by_role("table").filter(has=page.get_by_text("preview", exact=True))
    expect(metadata).to_be_visible()
    expect(metadata.get_by_text("by_error_code", exact=True).first).to_be_attached()
    columns = page.get_by_role("table").filter(has=page.get_by_text("Column name"))
    for column in ("sync", "source_key", "error_code", "message"):
        expect(columns.get_by_text(column, exact=True).first).to_be_attached()
    _shot(page, "quarantine")


def _alert_check(page, ui: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{ui}/assets/{SYNC}?view=checks")
    expect(page.get_by_text("crm_rejections_within_alert_threshold").filter(visible=True)
           .first).to_be_visible()
    expect(page.get_by_text("Passed", exact=True).filter(visible=True).first).to_be_visible()
    _shot(page, "alert-check")


def _backfill_statuses(ui: str) -> list[str]:
    data = _graphql(ui, "{ partitionBackfillsOrError { ... on PartitionBackfills { results { "
                        "status } } } }")
    return [b["status"] for b in data["partitionBackfillsOrError"]["results"]]


def _backfill_three_partitions(page, ui: str) -> None:
    from playwright.sync_api import expect

    first, last = BACKFILL
    _launch_from_asset_page(page, ui, SYNC, f"[{first}...{last}]", "Launch backfill")
    statuses = _poll("the backfill of three partitions", BACKFILL_SECONDS,
                     lambda: [s for s in _backfill_statuses(ui) if s != "REQUESTED"])
    assert statuses == ["COMPLETED_SUCCESS"] or statuses == ["COMPLETED"], statuses
    page.goto(f"{ui}/overview/backfills")
    expect(page.get_by_text("3 partitions", exact=True).first).to_be_visible()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    _shot(page, "backfill")
    keys = {m["runId"] for m in _materializations(ui, SYNC)}
    assert len(keys) >= 4, "one run per backfilled partition, after the first run"


def _lineage_of_a_linked_sync(page, ui: str) -> None:
    """Upstream of a linked sync, depth All: its own chain and the target sync's."""
    from playwright.sync_api import expect

    page.goto(f"{ui}/assets/{LINKED}")
    page.get_by_role("tab", name="Lineage").click()
    page.get_by_role("button", name="Upstream").click()
    depth_all = page.get_by_role("button", name="All", exact=True)
    if depth_all.is_enabled():
        depth_all.click()  # graph depth: all (it opens at depth 1)
    for name in ("source_projects", f"validated_{LINKED}", SYNC):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    _shot(page, "lineage")
