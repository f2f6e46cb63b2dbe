"""Build hook: the wheel ships the demo's spec and data (syncs.yaml, data/*.csv) in
crm_sync/demo_data/, so `crm-sync demo` works from an installed package. The clone keeps one
copy of each (at its root); this copies them into the build, never into the source tree.
Everything else is configured in pyproject.toml."""

from pathlib import Path
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DEMO_FILES = ["syncs.yaml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "data").glob("*.csv"))]


class BuildWithDemoData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs from the clone, which has the files already
        target = Path(self.build_lib) / "crm_sync" / "demo_data"
        for name in DEMO_FILES:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, target / name)

    def get_outputs(self, include_bytecode=True):
        if getattr(self, "editable_mode", False):
            return super().get_outputs(include_bytecode)
        target = Path(self.build_lib) / "crm_sync" / "demo_data"
        return [*super().get_outputs(include_bytecode), *(str(target / n) for n in DEMO_FILES)]


setup(cmdclass={"build_py": BuildWithDemoData})
