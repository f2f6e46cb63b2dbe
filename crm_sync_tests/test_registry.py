"""One registry of CRMs (issue 14): each connector module declares its PROFILE next to its
RESOURCE, crm_sync/connectors/__init__.py lists the modules once (CRMS), and everything else
looks a CRM up there. So the list of CRMs is not written again elsewhere in the client, and a
fifth CRM is one module plus its entry in CRMS."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

import crm_sync
import crm_sync.connectors as connectors
from crm_sync.spec import SpecError, load_spec
from crm_sync_tests.bundled_spec import bundled_unlinked
from crm_sync_tests.ast_source import parse as parse_source

PACKAGE = Path(crm_sync.__file__).parent
KNOWN = set(connectors.CRMS)  # the registry entries of today's four CRMs


def _allowed(path: Path) -> bool:
    """The registry itself: each CRM's own module, the list of modules, and the sandbox (an
    emulator that keeps its own list: it shares no code with the client)."""
    rel = path.relative_to(PACKAGE)
    if rel.parts[0] == "sandbox":
        return True
    if rel.parts[0] == "connectors" and (rel.stem in KNOWN or rel.name == "__init__.py"):
        return True
    return False


def _is_literal_subscript(node: ast.Subscript) -> bool:
    target = node.value
    return (isinstance(target, ast.Name) and target.id == "Literal") or (
        isinstance(target, ast.Attribute) and target.attr == "Literal")


def _crm_strings(node: ast.AST | None):
    """CRM-name string constants in a node (a key may be a tuple like ("salesforce", "Lead"))."""
    if node is None:
        return
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value in KNOWN:
            yield sub


def _lists_of_crms(tree: ast.AST):
    """(line, name) of each CRM name used as a dict key or a Literal member."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key in node.keys:
                for const in _crm_strings(key):
                    yield const.lineno, const.value
        elif isinstance(node, ast.Subscript) and _is_literal_subscript(node):
            for const in _crm_strings(node.slice):
                yield const.lineno, const.value


def _outside_the_registry(walk) -> list[str]:
    """`path:line: name` of each CRM name `walk(tree)` finds outside the registry's modules."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if _allowed(path):
            continue
        tree = parse_source(path.read_text(), filename=str(path))
        found += [f"{path.relative_to(PACKAGE)}:{line}: {name!r}" for line, name in walk(tree)]
    return found


def test_the_list_of_crms_is_written_only_in_the_registry():
    found = _outside_the_registry(_lists_of_crms)
    assert not found, "CRM names written as dict keys / Literal members outside the " \
                      "registry:\n" + "\n".join(found)


def _branches_on_crms(tree: ast.AST):
    """(line, name) of each CRM name compared with (`crm == "brevo"`, `crm in ("hubspot", ...)`):
    a CRM-specific rule outside the CRM's module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                for const in _crm_strings(side):
                    yield const.lineno, const.value


def test_no_client_module_branches_on_a_crm_name():
    found = _outside_the_registry(_branches_on_crms)
    assert not found, "CRM-specific branches outside the CRM's module:\n" + "\n".join(found)


def test_the_check_finds_a_list_written_again():
    # The check above is not blind: the tables it replaced are what it reports.
    tree = parse_source('KINDS = {"hubspot": "hubspot"}\nName = Literal["brevo", "x"]\n'
                     'REQ = {("salesforce", "Lead"): {"LastName"}}\n')
    assert sorted(_lists_of_crms(tree)) == [(1, "hubspot"), (2, "brevo"), (3, "salesforce")]
    tree = parse_source('a = crm == "superleap"\nb = crm in ("hubspot", "x")\n')
    assert sorted(_branches_on_crms(tree)) == [(1, "superleap"), (2, "hubspot")]


FIFTH = textwrap.dedent('''
    from typing import ClassVar

    from crm_sync.connectors.base import CrmResource
    from crm_sync.connectors.profile import CrmProfile


    class FifthResource(CrmResource):
        token_variable: ClassVar[str] = "FIFTHCRM_TOKEN"


    RESOURCE = FifthResource
    PROFILE = CrmProfile(
        name="fifthcrm", label="FifthCRM", resource=FifthResource, kind="fifthcrm",
        object_pattern=r"[a-z]+", field_pattern=r"[a-z_]+",
        name_rule="a FifthCRM name: lowercase letters",
        matching_keys=frozenset({"code"}), matching_key_is_field=True,
        matching_ignores_case=lambda spec: True,
        mirror_unsupported="FifthCRM cannot delete",
        required_fields={"deal": frozenset({"title"})},
    )
''')


@pytest.fixture
def fifth_crm(tmp_path, monkeypatch):
    """A fifth CRM: one module outside crm_sync, and its entry in the registry (CRMS)."""
    package = tmp_path / "extra_crms"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "fifthcrm.py").write_text(FIFTH)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(connectors, "CRMS", (*connectors.CRMS, "extra_crms.fifthcrm"))
    connectors.refresh()
    yield
    monkeypatch.undo()
    for name in ("extra_crms.fifthcrm", "extra_crms"):
        sys.modules.pop(name, None)
    connectors.refresh()


def _spec(tmp_path, **overrides) -> Path:
    sync = {"name": "deals_to_fifth", "source": "deals", "source_key": "deal_id",
            "crm": "fifthcrm", "object": "deal", "matching_key": "code",
            "fields": "{code: deal_code, title: title}", **overrides}
    path = tmp_path / "syncs.yaml"
    path.write_text("syncs:\n  - " + "\n    ".join(f"{k}: {v}" for k, v in sync.items()) + "\n")
    return path


def test_a_fifth_crm_is_one_module_and_its_registry_entry(fifth_crm, tmp_path):
    from crm_sync.transform import matching
    from crm_sync.project import build_defs
    from crm_sync.transform.schemas import required_fields

    spec = load_spec(_spec(tmp_path))
    sync = spec.sync("deals_to_fifth")
    assert sync.crm == "fifthcrm"
    defs = build_defs(spec=spec, store=tmp_path / "store.sqlite")
    graph = defs.resolve_asset_graph()
    upsert = graph.get(dg.AssetKey("deals_to_fifth"))
    assert upsert.kinds == {"fifthcrm"}
    assert dg.AssetKey("validated_deals_to_fifth") in graph.get_all_asset_keys()
    assert type(defs.resources["fifthcrm"]).__name__ == "FifthResource"
    # Its profile's rules are the ones applied: the required field, the case-blind matching.
    assert required_fields(sync) == {"code", "title"}
    assert matching.describe(sync) == "fifthcrm matches code ignoring case"


def test_a_fifth_crms_profile_rules_check_its_syncs(fifth_crm, tmp_path):
    cases = [({"matching_key": "title"}, "fifthcrm matches records by"),
             ({"object": "Deal"}, "is not a FifthCRM name"),
             ({"mode": "mirror"}, "FifthCRM cannot delete")]
    for overrides, message in cases:
        with pytest.raises(SpecError, match=message):
            load_spec(_spec(tmp_path, **overrides))


def test_an_unknown_crm_names_the_known_ones(tmp_path):
    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, crm="fifthcrm"))  # not in the registry
    assert "unknown CRM 'fifthcrm'; known: brevo, hubspot, salesforce, superleap" in str(err.value)


def test_old_names_are_derived_from_the_profiles():
    from crm_sync.pipeline.assets import CRM_KINDS
    from crm_sync.connectors.core import CRM_LABELS
    from crm_sync.spec import MATCHING_KEYS_BY_CRM, MIRROR_UNSUPPORTED

    assert CRM_KINDS == {crm: crm for crm in KNOWN}
    assert CRM_LABELS == {"superleap": "Superleap", "brevo": "Brevo", "hubspot": "HubSpot",
                          "salesforce": "Salesforce"}
    assert MATCHING_KEYS_BY_CRM == {"superleap": {"id"}, "brevo": {"ext_id", "id"}}
    assert set(MIRROR_UNSUPPORTED) == {"superleap"}


# -- CRM-specific validation rules live with the CRM --------------------------------------------
VALIDATION_MODULES = [PACKAGE / "transform" / name for name in ("validate.py", "schemas.py", "rules.py")]


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of a module, its classes and functions (a docstring may
    cite a CRM's documentation as the source of a rule every CRM shares)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _crm_mentions(tree: ast.AST):
    """(line, text) of each name or string constant (docstrings aside) naming a CRM."""
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = None if id(node) in docstrings else node.value
        elif isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            text = node.name
        elif isinstance(node, ast.alias):
            text = f"{node.name} {node.asname or ''}"
        elif isinstance(node, ast.ImportFrom):
            text = node.module
        else:
            continue
        if text and any(crm in text.lower() for crm in KNOWN):
            yield node.lineno, text


def test_validation_names_no_crm():
    """Each CRM's limits and record rules are declared by its profile (in its connector
    module); validation looks the CRM up in the registry, and transform/rules.py keeps the formats all
    CRMs share."""
    found = []
    for path in VALIDATION_MODULES:
        tree = parse_source(path.read_text(), filename=str(path))
        found += [f"{path.relative_to(PACKAGE)}:{line}: {text[:80]!r}"
                  for line, text in _crm_mentions(tree)]
    assert not found, "CRM-specific names or rules in validation:\n" + "\n".join(found)


def test_each_crms_record_rules_are_in_its_profile():
    from crm_sync.transform.schemas import build_schema, rule_texts

    spec = bundled_unlinked()
    for crm, rule in (("superleap", "superleap_id_format"), ("brevo", "max_attributes"),
                      ("brevo", "max_record_bytes"),
                      ("salesforce", "salesforce_record_id_as_external_id")):
        assert rule in {r.rule for r in connectors.PROFILES[crm].rules}
        sync = next(s for s in spec.syncs if s.crm == crm)
        assert rule in rule_texts(sync)
        checks = {c.name for col in build_schema(sync).columns.values() for c in col.checks}
        assert rule in checks
        others = [s for s in spec.syncs if s.crm != crm]
        assert all(rule not in rule_texts(s) for s in others)
