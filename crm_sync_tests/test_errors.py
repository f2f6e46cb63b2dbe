"""One failure taxonomy in one module (issue 14): every public exception of crm_sync is defined
in crm_sync.errors, under one base and exactly one of three kinds (fatal, retriable, one bad
record); the old import paths keep working; importing the errors loads no heavy library."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import crm_sync

# Not part of the library: the CRM emulator and the benchmark keep their own exceptions.
_OUTSIDE = ("crm_sync.sandbox", "crm_sync.devtools.bench")


def _package_modules() -> list[str]:
    """Import every module of crm_sync except the sandbox and the benchmark (their packages are
    not even imported) and return their names."""
    names, todo = [], [(crm_sync.__path__, "crm_sync.")]
    while todo:
        path, prefix = todo.pop()
        for info in pkgutil.iter_modules(path, prefix):
            if info.name.startswith(_OUTSIDE):
                continue
            module = importlib.import_module(info.name)
            names.append(info.name)
            if info.ispkg:
                todo.append((module.__path__, info.name + "."))
    return names


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _all_subclasses(sub)
    return found


def _public_exceptions() -> list[type]:
    """Every exception class whose code lives in crm_sync (outside the sandbox and the bench),
    wherever it is defined (a module's top level or inside a function), with a public name."""
    modules = set(_package_modules()) | {"crm_sync"}
    found = [cls for cls in _all_subclasses(BaseException)
             if cls.__module__ in modules
             and not any(part.startswith("_") for part in cls.__qualname__.split("."))]
    return sorted(found, key=lambda cls: (cls.__module__, cls.__qualname__))


def _kinds():
    from crm_sync import errors

    return errors.FatalError, errors.RetriableError, errors.BadRecordError


def test_every_public_exception_is_defined_in_errors():
    exceptions = _public_exceptions()
    # The walk finds them (the connectors' and the store's are imported by it).
    assert {"SpecError", "FatalCrmError", "PartitionBusy"} <= {c.__name__ for c in exceptions}
    elsewhere = [f"{c.__module__}.{c.__qualname__}" for c in exceptions
                 if c.__module__ != "crm_sync.errors"]
    assert elsewhere == [], f"exception classes defined outside crm_sync.errors: {elsewhere}"


def test_every_public_exception_is_of_exactly_one_kind():
    from crm_sync.errors import CrmSyncError

    kinds = _kinds()
    wrong = {}
    for cls in _public_exceptions():
        if cls is CrmSyncError:
            continue
        of = [kind.__name__ for kind in kinds if issubclass(cls, kind)]
        if not issubclass(cls, CrmSyncError) or len(of) != 1:
            wrong[cls.__qualname__] = of
    assert wrong == {}, f"not a CrmSyncError of exactly one kind: {wrong}"


def test_every_exception_says_what_a_user_sees_and_does():
    undocumented = [c.__qualname__ for c in _public_exceptions()
                    if len((c.__dict__.get("__doc__") or "").split()) < 8]
    assert undocumented == []


@pytest.mark.parametrize("module, name, builtin, kind", [
    ("crm_sync.spec", "SpecError", ValueError, "FatalError"),
    ("crm_sync.extract.sources", "SourceError", RuntimeError, "FatalError"),
    ("crm_sync.extract.csvsource", "CsvFileError", ValueError, "FatalError"),
    ("crm_sync.transform.validate", "SourceTableError", ValueError, "FatalError"),
    ("crm_sync.connectors.core", "FatalCrmError", RuntimeError, "FatalError"),
    ("crm_sync.connectors.core", "CrmUnreachable", RuntimeError, "FatalError"),
    ("crm_sync.connectors.core", "BadBaseUrl", RuntimeError, "FatalError"),
    ("crm_sync.connectors.core", "MissingToken", RuntimeError, "FatalError"),
    ("crm_sync.load.mirror", "MassDeleteRefused", RuntimeError, "FatalError"),
    ("crm_sync.load.runner", "AccountingError", AssertionError, "FatalError"),
    ("crm_sync.connectors.core", "TransientFailure", RuntimeError, "RetriableError"),
    ("crm_sync.connectors.core", "AllowanceReserveReached", RuntimeError, "RetriableError"),
    ("crm_sync.state.lease", "PartitionBusy", Exception, "RetriableError"),
])
def test_old_import_paths_and_bases_still_work(module, name, builtin, kind):
    """Code that imports an exception from where it used to live, or catches it by its builtin
    base (`except ValueError` in the CLI), behaves as before."""
    from crm_sync import errors

    old = getattr(importlib.import_module(module), name)
    assert old is getattr(errors, name)
    assert issubclass(old, builtin) and issubclass(old, getattr(errors, kind))


def test_fatal_crm_errors_are_one_family():
    from crm_sync.errors import BadBaseUrl, CrmUnreachable, FatalCrmError, MissingToken

    for cls in (BadBaseUrl, CrmUnreachable, MissingToken):
        assert issubclass(cls, FatalCrmError)  # one `except FatalCrmError` catches them all


def test_partition_busy_names_the_holder():
    from crm_sync.errors import PartitionBusy

    busy = PartitionBusy("contacts", "2026-03-02", {"owner": "run 1234abcd", "acquired_at": 0})
    assert str(busy) == ("skipped: partition 2026-03-02 of sync contacts is being synced by "
                         "another run (owner run 1234abcd, since 1970-01-01 00:00:00 UTC)")
    assert busy.holder["owner"] == "run 1234abcd"


def test_importing_the_errors_loads_neither_dagster_nor_httpx():
    probe = ("import sys, crm_sync.errors; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'httpx') "
             "or m.startswith(('crm_sync.connectors', 'crm_sync.sandbox'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_dagster_failures_still_reachable_through_errors():
    """Branches written before the move import the failure builders from crm_sync.errors."""
    from crm_sync import errors
    from crm_sync.pipeline import failures as dagster_failures

    for name in ("crm_failure", "crm_stage_failure", "readable_crm_errors"):
        assert getattr(errors, name) is getattr(dagster_failures, name)
