"""Dagster processes the tests start (`dagster dev`; `dagster-webserver` and `dagster-daemon`),
each in its own process group (start_new_session=True), and stopped with everything they
started: code servers, run workers, step processes."""

from __future__ import annotations

import os
import signal
import subprocess  # nosec B404


def stop_process_group(proc: subprocess.Popen) -> None:
    """Stop the process and everything it started (its own process group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: a graceful shutdown
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group (run workers, ...)
    except ProcessLookupError:
        pass
    proc.wait()
