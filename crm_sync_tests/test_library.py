"""crm_sync as a library: the pipeline loads without the emulator, and a project that installs
the package (not editable) builds its Definitions from its own spec, paths in that project."""

from __future__ import annotations

import subprocess
import sys

from crm_sync.spec import PROJECT_ROOT


def test_importing_the_definitions_loads_no_sandbox_or_bench_module():
    code = ("import sys, crm_sync.definitions\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('crm_sync.sandbox', "
            "'crm_sync.bench', 'starlette', 'uvicorn')))\n"
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
