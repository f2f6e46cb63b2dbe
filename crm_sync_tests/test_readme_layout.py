"""README's "Layout" section lists the package as it is: every module of crm_sync (outside the
sandbox's and the connectors' per-CRM modules, which the section names by pattern) and every
package, and nothing that is not there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "crm_sync"


def _layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Layout", 1)[1]
    return section.split("```", 2)[1]


def _listed_paths() -> set[str]:
    """Paths in the layout tree: `name/` opens a folder at its indentation, `name.py` is a file."""
    found, stack = set(), []
    for line in _layout_block().splitlines():
        match = re.match(r"^(\s*)([\w.]+/?)(\s|$)", line)
        if not match or not (match.group(2).endswith("/") or match.group(2).endswith(".py")):
            continue
        depth = len(match.group(1)) // 2
        stack = stack[:depth]
        path = "/".join([*stack, match.group(2).rstrip("/")])
        found.add(path)
        if match.group(2).endswith("/"):
            stack.append(match.group(2).rstrip("/"))
    return found


def _actual_paths() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if "__pycache__" in rel.parts or rel.name == "__init__.py":
            continue
        # per-CRM modules of the sandbox are named by pattern in the section, not one by one
        if rel.parts[1] == "sandbox" and rel.stem.split("_")[0] in (
                "superleap", "brevo", "hubspot", "salesforce"):
            continue
        found.add(str(rel))
        for parent in rel.parents:
            if parent != Path("."):
                found.add(str(parent))
    return found


def test_every_module_is_in_the_layout_section():
    missing = sorted(_actual_paths() - _listed_paths())
    assert not missing, "modules missing from README's Layout section:\n" + "\n".join(missing)


def test_the_layout_section_names_nothing_that_does_not_exist():
    stale = sorted(_listed_paths() - _actual_paths())
    assert not stale, "README's Layout section names what is not in the tree:\n" + "\n".join(stale)
