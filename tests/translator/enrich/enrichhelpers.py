"""Helpers of the enrichment-stage tests: a connection registry, and a real HTTP server
on loopback for $https (aiohttp.web in its own thread and event loop)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from aiohttp import web

from translator.connections import Connection, ConnectionRegistry


def make_registry(uri: str) -> ConnectionRegistry:
    """``meta``: the MongoDB at ``uri``; ``kafka1``: a Kafka entry (never contacted)."""
    return ConnectionRegistry({
        "meta": Connection(name="meta", type="mongodb", uri=uri),
        "kafka1": Connection(name="kafka1", type="kafka", bootstrap_servers="127.0.0.1:9"),
    })


class Server:
    """A real HTTP server on 127.0.0.1 (random port) in its own thread and loop."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.flaky_left = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None
        self.port = 0
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/echo/{rest:.*}", self.echo)
        app.router.add_route("*", "/text", self.fixed(lambda: web.Response(text="hello", content_type="text/plain")))
        app.router.add_route("*", "/empty", self.fixed(lambda: web.Response(status=204)))
        app.router.add_route("*", "/html", self.fixed(lambda: web.Response(text="<p>", content_type="text/html")))
        app.router.add_route("*", "/badjson", self.fixed(lambda: web.Response(text="{oops", content_type="application/json")))
        app.router.add_route("*", "/jsonstr", self.fixed(lambda: web.json_response({"inner": '{"a": [1, {"b": "2"}]}', "s": "x"})))
        app.router.add_route("*", "/status/{code}", self.status)
        app.router.add_route("*", "/slow/{ms}", self.slow)
        app.router.add_route("*", "/flaky", self.flaky)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def fixed(self, make: Any) -> Any:
        async def handler(request: web.Request) -> web.Response:
            self.calls.append({"path": request.path})
            return make()  # type: ignore[no-any-return]

        return handler

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        call = {
            "method": request.method, "path": request.path, "query": dict(request.query),
            "xdev": request.headers.get("X-Dev"), "auth": request.headers.get("Authorization"),
            "bad": request.headers.get("Bad Name"), "body": json.loads(body) if body else None,
        }
        self.calls.append(call)
        return web.json_response(call)

    async def status(self, request: web.Request) -> web.Response:
        self.calls.append({"path": request.path})
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        return web.json_response({"slow": True})

    async def flaky(self, request: web.Request) -> web.Response:
        self.calls.append({"path": request.path})
        if self.flaky_left > 0:
            self.flaky_left -= 1
            return web.Response(status=503)
        return web.json_response({"ok": 1})

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
            self.runner = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
