"""The ceiling: a minimal HTTP/1.1 client that sends the same request bodies the pipeline sent,
with the same concurrency, to the same sandbox, and does nothing else (no planning, no payload
building, no parsing beyond what waiting for Brevo's processes needs, no state).

`Recorder` captures the bodies while the pipeline runs (every request with a body that its
connector's core sends); `replay` sends them again. For Brevo a batch is only done once its
process is, so each upsert is followed by the same polls (same first wait and backoff as the
connector) until the process is completed. Brevo reports nothing per record, so its connector
reads the batch's records back (`GET /v3/objects/{type}/records` pages) to confirm them: those
reads are recorded too and replayed once every upsert is done, so that both sides ask the
sandbox for the same work.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import contextmanager
from urllib.parse import urlencode, urlsplit

from crm_sync.connectors.core import HttpCore

DONE = ("completed", "failed", "cancelled")


class Recorder:
    """While active, every request with a body sent through HttpCore is recorded."""

    def __init__(self):
        self.requests: list[tuple[str, str, bytes]] = []
        self.reads: list[str] = []  # Brevo's read-backs: path and query of each

    @contextmanager
    def active(self):
        original = HttpCore.call
        requests, reads = self.requests, self.reads

        async def call(core, method, path, *, content=None, **options):
            if content is not None:
                requests.append((method, path, content))
            elif method == "GET" and path.endswith("/records"):
                params = options.get("params")
                reads.append(f"{path}?{urlencode(params)}" if params else path)
            return await original(core, method, path, content=content, **options)

        HttpCore.call = call
        try:
            yield self
        finally:
            HttpCore.call = original


class RawPool:
    """At most `size` keep-alive connections, one request at a time on each."""

    def __init__(self, base_url: str, headers: dict[str, str], size: int):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.head = f"host: {self.host}:{self.port}\r\n" + \
            "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.size, self.opened = size, 0
        self.idle: asyncio.Queue = asyncio.Queue()

    async def _take(self):
        if self.idle.empty() and self.opened < self.size:
            self.opened += 1
            try:
                return await asyncio.open_connection(self.host, self.port)
            except BaseException:
                self.opened -= 1
                raise
        return await self.idle.get()

    async def request(self, method: str, path: str, body: bytes | None = None
                      ) -> tuple[int, bytes]:
        reader, writer = await self._take()
        try:
            head = f"{method} {path} HTTP/1.1\r\n{self.head}"
            if body is not None:
                head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            writer.write(head.encode() + b"\r\n" + (body or b""))
            status = int((await reader.readline()).split()[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
                elif name == b"transfer-encoding":
                    raise RuntimeError("the sandbox answered with a chunked body")
            payload = await reader.readexactly(length)
        except BaseException:
            writer.close()
            self.opened -= 1
            raise
        if close:
            writer.close()
            self.opened -= 1
        else:
            self.idle.put_nowait((reader, writer))
        return status, payload

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait()[1].close()


async def replay(base_url: str, headers: dict[str, str], concurrency: int,
                 requests: list[tuple[str, str, bytes]], polls: tuple[float, float] | None
                 = None, reads: list[str] = ()) -> int:
    """Send every request (all at once, `concurrency` in flight); for a CRM whose upserts are
    processes (`polls` given: Brevo), then poll each process until it is done, waiting (first,
    longest) seconds between polls with the connector's backoff; then the recorded reads.
    Returns the number of requests sent."""
    pool = RawPool(base_url, headers, concurrency)
    sent = 0

    async def one(method: str, path: str, body: bytes) -> None:
        nonlocal sent
        status, payload = await pool.request(method, path, body)
        sent += 1
        if not 200 <= status < 300:
            raise RuntimeError(f"the sandbox answered {status} to {method} {path}: "
                               f"{payload[:300]!r}")
        if polls is None:
            return
        process, (wait, longest) = json.loads(payload)["processId"], polls
        while True:
            await asyncio.sleep(wait)
            status, answer = await pool.request("GET", f"/v3/processes/{process}")
            sent += 1
            if status == 200 and json.loads(answer).get("status") in DONE:
                return
            wait = min(wait * 1.5, longest)

    async def read(path: str) -> None:
        nonlocal sent
        status, payload = await pool.request("GET", path)
        sent += 1
        if status != 200:
            raise RuntimeError(f"the sandbox answered {status} to GET {path}: {payload[:300]!r}")

    try:
        await asyncio.gather(*(one(*request) for request in requests))
        await asyncio.gather(*(read(path) for path in reads))
    finally:
        pool.close()
    return sent
