"""Run the sandbox: in the foreground (CLI), or as a child process for the demo and the tests."""

from __future__ import annotations

import os
import socket
import subprocess  # nosec B404  # we start our own sandbox, with a fixed argument list
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve(host: str = "127.0.0.1", port: int = 8765, db: str = ".crm_sync/sandbox.sqlite",
          certfile: str | None = None, keyfile: str | None = None, **app_options) -> None:
    """Serve the sandbox until interrupted (what `crm-sync sandbox` runs)."""
    import uvicorn

    from crm_sync.sandbox.app import create_app

    app = create_app(db_path=db, **app_options)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                ssl_certfile=certfile, ssl_keyfile=keyfile, timeout_keep_alive=30)


@contextmanager
def sandbox_process(db: str | Path, port: int | None = None, host: str = "127.0.0.1",
                    extra_args: list[str] | None = None, env: dict | None = None):
    """Start `crm-sync sandbox` as a child process; yield its base URL; stop it afterwards."""
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "crm_sync.cli", "sandbox", "--host", host, "--port", str(port),
           "--db", str(db), *(extra_args or [])]
    # B603 (nosec below): a fixed argument list (our own module), no shell
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})})  # nosec B603
    tls = "--certfile" in (extra_args or [])
    url = f"{'https' if tls else 'http'}://{host}:{port}"
    try:
        wait_until_up(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_up(url: str, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the sandbox exited with code {proc.returncode} before it was up")
        try:
            # Our own child process on this machine; its certificate may be a throwaway one.
            health = httpx.get(f"{url}/_sandbox/health", timeout=1,
                               verify=not url.startswith("https"))  # nosec B501
            if health.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the sandbox did not answer at {url} within {timeout:.0f}s")
