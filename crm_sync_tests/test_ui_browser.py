"""The Dagster UI as users see it, in a real (headless) browser.

Starts the CRM sandbox and `dagster dev` on 127.0.0.1 with a throwaway DAGSTER_HOME, opens the
UI in Debian's Chromium driven by Playwright, finds the asset graph, materializes one partition
of one sync by clicking through the UI (asset page -> Lineage, upstream -> Materialize all ->
partition -> Launch), waits for the run to succeed and reads the run report on the asset page.
Screenshots go to test-artifacts/ (gitignored), with the `dagster dev` log.

Needs /usr/bin/chromium (`apt-get install -y --no-install-recommends chromium`, as .ci/run
does) and the `playwright` package (the test extra); never downloads a browser. Skipped, with
the reason, when either is missing. `pytest -m "not browser"` leaves it out.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from crm_sync.sandbox.app import DEFAULT_TOKENS, TOKEN_ENV
from crm_sync.sandbox.server import free_port, sandbox_process
from crm_sync.spec import PROJECT_ROOT
from crm_sync.devtools.ui import prepare_home
from crm_sync_tests.processes import stop_process_group as _stop

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
SYNC, SOURCE, CRM, OBJECT = "projects_to_brevo", "projects", "brevo", "project"
PARTITION = "2026-11-03"
UI_START_SECONDS = 180  # dagster dev on a slow shared machine: webserver, daemon, code server
RUN_SECONDS = 240  # one run: run worker + one process per step, each loading the definitions


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return (f"Debian's chromium is not installed ({CHROMIUM} missing): run `apt-get install "
                f"-y --no-install-recommends chromium` (.ci/run does it when it can)")
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed: pip install -e '.[test]'"
    return None


pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(UI_START_SECONDS + RUN_SECONDS + 180),
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    """(UI URL, sandbox URL): the sandbox and `dagster dev` on free ports of 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("ui")
    home = tmp / "dagster_home"
    prepare_home(home)
    ARTIFACTS.mkdir(exist_ok=True)
    with sandbox_process(tmp / "sandbox.sqlite") as sandbox_url:
        env = {**os.environ, "DAGSTER_HOME": str(home),
               "CRM_SYNC_STORE": str(tmp / "crm_sync.sqlite")}
        for crm, name in TOKEN_ENV.items():
            env[name] = DEFAULT_TOKENS[crm]
            env[f"{crm.upper()}_BASE_URL"] = sandbox_url
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (ARTIFACTS / "dagster-dev.log").open("w")
        _STARTED[0] = time.monotonic()
        proc = subprocess.Popen(  # nosec B603: a fixed argument list
            [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            deadline = time.monotonic() + UI_START_SECONDS
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"dagster dev exited with code {proc.returncode}; see "
                                f"{ARTIFACTS / 'dagster-dev.log'}")
                try:
                    if httpx.get(f"{url}/server_info", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"the Dagster webserver did not answer within "
                                f"{UI_START_SECONDS} s; see {ARTIFACTS / 'dagster-dev.log'}")
                time.sleep(1)
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


_STARTED = [time.monotonic()]  # when `dagster dev` was started


def _shot(page, name: str) -> None:
    """A screenshot in test-artifacts/, and when it was taken (printed with the test's output)."""
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    print(f"[{time.monotonic() - _STARTED[0]:6.1f} s] {name}.png")


def test_materialize_one_partition_from_the_ui(dagster_ui, page):
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    ui, sandbox_url = dagster_ui
    try:
        # The asset graph: one group per CRM, plus the sources and the quarantine.
        page.goto(f"{ui}/asset-groups", timeout=UI_START_SECONDS * 1000)
        for group in ("sources", "superleap", "hubspot", "salesforce", CRM, "quarantine"):
            expect(page.get_by_text(group, exact=True).first).to_be_visible(
                timeout=UI_START_SECONDS * 1000)  # the code location may still be loading
        expect(page.get_by_text("fetching statuses")).to_have_count(0)
        _shot(page, "01-asset-groups")

        # The upsert asset's page: description, kind, the sync spec as metadata.
        page.goto(f"{ui}/assets/{SYNC}")
        expect(page.get_by_role("button", name="Materialize…")).to_be_visible()
        for text in ("Projects into the Brevo custom object", "mapped_fields", "matching_key"):
            expect(page.get_by_text(text).first).to_be_visible()

        # Its lineage, upstream: source -> validated (+ check) -> upsert, materialized together,
        # with the chain of the companies its projects link to (syncs.yaml associations).
        page.get_by_role("tab", name="Lineage").click()
        page.get_by_role("button", name="Upstream").click()
        depth_all = page.get_by_role("button", name="All", exact=True)
        if depth_all.is_enabled():
            depth_all.click()  # graph depth: all
        expect(page.get_by_text(f"source_{SOURCE}", exact=True).first).to_be_visible()
        expect(page.get_by_text(f"validated_{SYNC}", exact=True).first).to_be_visible()
        expect(page.get_by_text("companies_to_brevo", exact=True).first).to_be_visible()
        expect(page.get_by_text(re.compile(r"^\d+ partitions$"))).to_have_count(6)
        _shot(page, "02-lineage")
        page.get_by_role("button", name="Materialize all…").click()

        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text("Launch runs to materialize 6 assets")).to_be_visible()
        partitions = dialog.get_by_role("textbox").first  # the partition range: "2026-11-03"
        partitions.fill(PARTITION)
        partitions.press("Tab")
        launch = dialog.get_by_role("button", name="Launch 1 run")
        expect(launch).to_be_enabled()
        _shot(page, "03-launch-partition")
        launch.click()
        expect(dialog).to_be_hidden()

        # The run: from the runs list to its page, until it succeeds.
        page.goto(f"{ui}/runs")
        page.locator("a[href^='/runs/']").filter(has_text=re.compile(r"^[0-9a-f]{8}$")).first \
            .click()
        status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
        expect(status).to_be_visible(timeout=RUN_SECONDS * 1000)
        _shot(page, "04-run")
        assert status.inner_text() == "Success", "the run failed: see 04-run.png"

        # The asset check of the validated asset, with its verdict.
        page.goto(f"{ui}/assets/validated_{SYNC}?view=checks")
        expect(page.get_by_text("quarantine_share_within_threshold").filter(visible=True)
               .first).to_be_visible()
        expect(page.get_by_text("Passed", exact=True).filter(visible=True).first).to_be_visible()
        _shot(page, "05-asset-check")

        # The run report on the asset page: counts and the quarantine by error code.
        page.goto(f"{ui}/assets/{SYNC}")
        metadata = page.get_by_role("table").filter(has_text="rows_in")
        expect(metadata).to_be_visible()
        for key in ("rows_in", "created", "quarantined_by_error_code", "quarantine_table",
                    "quarantine_preview"):
            expect(metadata.get_by_text(key, exact=True).first).to_be_attached()
        records = httpx.get(f"{sandbox_url}/_sandbox/records/{CRM}/{OBJECT}").json()["records"]
        assert records, "the run launched from the UI wrote nothing to the sandbox"
        created = metadata.locator("tr").filter(has=page.get_by_text("created", exact=True))
        expect(created.locator("td").last).to_have_text(str(len(records)))
        page.set_viewport_size({"width": 1600, "height": 1500})  # the whole report
        metadata.evaluate("table => table.scrollIntoView({block: 'start'})")
        _shot(page, "06-run-report")
    finally:
        _shot(page, "zz-last-page")
