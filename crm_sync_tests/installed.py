"""crm_sync installed as a user installs it (not editable, from a copy of the clone's package
sources) into a new virtual environment: test_library.py and test_component.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crm_sync.spec import PROJECT_ROOT

# What a plain `pip install <clone>` builds from (the rest of the clone is not packaged).
PACKAGE_SOURCES = ["crm_sync", "data", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md",
                   "syncs.yaml", "workspace.yaml"]


def can_build_offline() -> bool:
    """pip --no-build-isolation builds with this environment's setuptools: one that makes
    wheels by itself (70.1+, the test extra), or an older one with the `wheel` package."""
    import importlib.util

    import setuptools

    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def fresh_venv(path: Path) -> Path:
    """A new virtual environment that reuses this one's installed packages (dagster, pip,
    setuptools...) through a .pth file; crm_sync itself is installed into it afterwards."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True,
                   timeout=120)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True).stdout
    deps = [p for p in sys.path if p.rstrip("/").endswith("site-packages")]
    Path(site.strip(), "_crm_sync_test_deps.pth").write_text("\n".join(deps) + "\n")
    return python


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "CRM_SYNC_SPEC", "CRM_SYNC_STORE", "CRM_SYNC_DATA_DIR")}
    return {**env, **extra}


def install_package(tmp_path: Path) -> tuple[Path, Path]:
    """(python, venv): a new environment with crm_sync installed from a copy of the clone."""
    if not can_build_offline():
        pytest.skip("setuptools>=70.1 is needed to build the wheel offline: "
                    "pip install -e '.[test]'")
    source = tmp_path / "source"
    source.mkdir()
    for name in PACKAGE_SOURCES:
        copy = shutil.copytree if (PROJECT_ROOT / name).is_dir() else shutil.copy2
        copy(PROJECT_ROOT / name, source / name,
             **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree
                else {}))
    venv = tmp_path / "venv"
    python = fresh_venv(venv)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", str(source)],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    return python, venv
