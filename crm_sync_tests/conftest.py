"""Shared fixtures: the sandbox runs once per session as a real server on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess  # nosec B404

import httpx
import pytest

from crm_sync.sandbox.app import DEFAULT_TOKENS, TOKEN_ENV
from crm_sync.sandbox.server import sandbox_process

CRMS = tuple(TOKEN_ENV)


@pytest.fixture(scope="session", autouse=True)
def _environment(tmp_path_factory):
    """Sandbox tokens, an isolated sync store and Dagster instance for the whole session (the
    CLI's backfill and the demo record their runs in $DAGSTER_HOME's instance, never the
    checkout's .crm_sync/dagster_home)."""
    saved = dict(os.environ)
    for crm, name in TOKEN_ENV.items():
        os.environ[name] = DEFAULT_TOKENS[crm]
    os.environ["CRM_SYNC_STORE"] = str(tmp_path_factory.mktemp("store") / "crm_sync.sqlite")
    os.environ["DAGSTER_HOME"] = str(tmp_path_factory.mktemp("dagster_home"))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def sandbox_url(tmp_path_factory, _environment):
    db = tmp_path_factory.mktemp("sandbox") / "sandbox.sqlite"
    with sandbox_process(db) as url:
        for crm in CRMS:
            os.environ[f"{crm.upper()}_BASE_URL"] = url
        yield url


@pytest.fixture
def sandbox(sandbox_url):
    """A sandbox emptied before the test, with an admin client."""
    client = httpx.Client(base_url=sandbox_url, timeout=30)
    client.post("/_sandbox/reset").raise_for_status()
    yield client
    client.post("/_sandbox/reset")
    client.close()


def stored(sandbox: httpx.Client, crm: str, obj: str) -> list[dict]:
    response = sandbox.get(f"/_sandbox/records/{crm}/{obj}")
    response.raise_for_status()
    return response.json()["records"]


def validation_checks(result) -> list:
    """The validated asset's threshold check of a run (the upsert asset has its alert check
    too: crm_sync/pipeline/alerts.py)."""
    return [c for c in result.get_asset_check_evaluations()
            if c.check_name == "quarantine_share_within_threshold"]


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (crm_sync/devtools/pg_server.py). Without
    the server programs: skipped, except under CI=true, where that is a failure."""
    from crm_sync.devtools.pg_server import postgres_server

    try:
        with postgres_server() as server:
            yield server
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        reason = f"no PostgreSQL server: {exc} {detail.decode(errors='replace')}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def pg_database(postgres):
    """new(prefix): a new, empty database on the session's server, its name; every database
    made so is dropped after the test."""
    made: list[str] = []

    def new(prefix: str = "t") -> str:
        made.append(postgres.create_database(prefix))
        return made[-1]

    yield new
    for name in made:
        postgres.drop_database(name)


@pytest.fixture
def postgres_url(postgres, pg_database) -> str:
    """A SQLAlchemy URL of a new, empty database on the session's server (dropped after the
    test)."""
    return postgres.url(pg_database())


# The sync store's backends. A test module runs its store tests on both by setting
# `STORE_BACKENDS = BACKENDS`; one test (or some of its parameters) by parametrizing
# `store_backend` itself, `indirect=True`. Otherwise the store is the SQLite default.
BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc):
    backends = getattr(metafunc.module, "STORE_BACKENDS", None)
    named = any("store_backend" in str(mark.args[0])
                for mark in metafunc.definition.iter_markers("parametrize"))
    if backends and "store_backend" in metafunc.fixturenames and not named:
        metafunc.parametrize("store_backend", backends, indirect=True)


@pytest.fixture
def store_backend(request) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def store_url(store_backend, request, tmp_path, monkeypatch) -> str:
    """Where a new, empty sync store of the test's backend is (a SQLite path, or a database
    of the session's PostgreSQL server), also in $CRM_SYNC_STORE (the pipeline's and child
    processes' store)."""
    if store_backend == "postgresql":
        location = request.getfixturevalue("postgres_url")
    else:
        location = str(tmp_path / "crm_sync.sqlite")
    monkeypatch.setenv("CRM_SYNC_STORE", location)
    return location


@pytest.fixture
def store(store_url):
    """A fresh sync store for one test (on the test's backend: `store_backend`)."""
    from crm_sync.state.store import SyncStore

    return SyncStore(store_url)
