"""The child process of section 7 (peer.py): drt-core's own sync of a file to HubSpot, its
network fenced to the sandbox on 127.0.0.1.

    python -m crm_sync.devtools.bench.peer_drt '<json config>'

drt's HubSpot destination has no base-URL setting (its URL is the module constant
`https://api.hubapi.com/crm/v3/objects`, drt/destinations/hubspot.py in drt-core 1.2.1), so
nothing of drt is changed: httpx's transport, in this process only, rewrites api.hubapi.com to
the sandbox and refuses every other host, and sockets and name look-ups refuse anything but
127.0.0.1 / localhost. The last line printed is a JSON object: seconds, CPU seconds, drt's
counts and the hosts refused (the parent asserts there are none). It imports nothing of
crm_sync's pipeline, so it starts quickly.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx

LOCAL_HOSTS = ("127.0.0.1", "localhost")


def fence(sandbox_url: str, refused: list[str]) -> None:
    """Send drt's HubSpot requests to the sandbox and nothing anywhere else: httpx's transport
    rewrites api.hubapi.com to the sandbox and refuses any other host; sockets and name
    look-ups refuse anything but 127.0.0.1 / localhost (a last line, whatever the library)."""
    import socket

    target = httpx.URL(sandbox_url)
    if target.host not in LOCAL_HOSTS:
        raise RuntimeError(f"the sandbox must be on 127.0.0.1, not {target.host}")
    original = httpx.HTTPTransport.handle_request

    def handle_request(transport, request):
        if request.url.host == "api.hubapi.com":
            request.url = request.url.copy_with(scheme=target.scheme, host=target.host,
                                                port=target.port)
            request.headers["Host"] = f"{target.host}:{target.port}"
        if request.url.host not in LOCAL_HOSTS:
            refused.append(request.url.host)
            raise PermissionError(f"bench fence: no requests to {request.url.host}")
        return original(transport, request)

    httpx.HTTPTransport.handle_request = handle_request
    connect, lookup = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
                *LOCAL_HOSTS, "::1"):
            refused.append(str(address[0]))
            raise PermissionError(f"bench fence: no connection to {address[0]}")
        return connect(sock, address)

    def guarded_lookup(host, *args, **kwargs):
        if host not in (*LOCAL_HOSTS, "::1", None):
            refused.append(str(host))
            raise PermissionError(f"bench fence: no name look-up of {host}")
        return lookup(host, *args, **kwargs)

    socket.socket.connect = guarded_connect
    socket.getaddrinfo = guarded_lookup


def drt_sync(config: dict) -> dict:
    """drt's sync of the file to HubSpot, as a drt project would declare it (sync YAML as a
    dict), timed from its first read of the file to its last answer."""
    import tempfile

    from drt.config.credentials import DuckDBProfile
    from drt.config.models import SyncConfig
    from drt.destinations.hubspot import HubSpotDestination
    from drt.engine.sync import run_sync
    from drt.sources.duckdb import DuckDBSource

    refused: list[str] = []
    fence(config["url"], refused)
    path = config["file"].replace("'", "''")
    # Each CRM property from its source column, as in drt's own duckdb_to_hubspot template
    # (`tojson`: a missing value is null, not the text "None").
    template = "{" + ", ".join(f'"{name}": {{{{ row.{column} | tojson }}}}'
                               for name, column in config["columns"].items()) + "}"
    # B608: the path is the bench's own file, quoted above.
    model = f"SELECT * FROM read_csv('{path}', all_varchar=true, header=true)"  # nosec B608
    sync = SyncConfig.model_validate({
        "name": "contacts_to_hubspot", "model": model,
        "destination": {"type": "hubspot", "object_type": config["object"],
                        "id_property": config["id_property"],
                        "properties_template": template,
                        "auth": {"type": "bearer", "token_env": config["token_env"]}},
        "sync": {"mode": "full", "batch_size": 100, "on_error": "skip",
                 "rate_limit": {"requests_per_second": config["requests_per_second"]}}})
    with tempfile.TemporaryDirectory() as project:
        started, cpu = time.perf_counter(), time.process_time()
        result = run_sync(sync, DuckDBSource(), HubSpotDestination(),
                          DuckDBProfile(type="duckdb"), Path(project))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu": cpu, "success": result.success,
            "failed": result.failed, "errors": [str(e)[:300] for e in result.errors[:3]],
            "refused": refused}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m crm_sync.devtools.bench.peer_drt '<json config>'",
              file=sys.stderr)
        return 2
    print(json.dumps(drt_sync(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
