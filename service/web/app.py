"""The console's aiohttp application: pages, the JSON API, login and CSRF protection.

It runs on the service's own asyncio loop and calls the same
:class:`~service.supervisor.Supervisor` methods as the wire commands, so a start from
the console is exactly ``sp.x.start()``.

Security follows the wire service (``service/server.py``): a non-loopback bind needs
``--users`` and then a login (a random session cookie, ``HttpOnly``,
``SameSite=Strict``); every state-changing request must carry the page's CSRF token
in ``X-CSRF-Token`` and, when the browser sends ``Origin``, come from this origin.
Pages are static shells; the browser fills them with ``textContent`` only.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from service.auth import THROTTLE
from service.errors import CommandError
from service.supervisor import Supervisor
from service.web import model

log = logging.getLogger("mqlflow.console")

STATIC = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "mqlflow_console"
SESSION_SECONDS = 12 * 3600
FAILED_LOGIN_DELAY = 1.0
PAGES = {"processors", "processor", "connections"}
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'"
)

Action = Callable[[Supervisor, str], Awaitable[None]]


async def _start(sup: Supervisor, name: str) -> None:
    await sup.start(name, {})


async def _stop(sup: Supervisor, name: str) -> None:
    await sup.stop(name)


async def _drop(sup: Supervisor, name: str) -> None:
    await sup.drop(name)


# The buttons: the same supervisor operations as startStreamProcessor & co.
ACTIONS: dict[str, Action] = {"start": _start, "stop": _stop, "drop": _drop}


@dataclass
class Session:
    user: str | None
    csrf: str = field(default_factory=lambda: secrets.token_hex(32))
    expires: float = field(default_factory=lambda: time.time() + SESSION_SECONDS)


class Console:
    """State of one console: sessions, rate history, the DLQ reader, chart assets."""

    def __init__(self, supervisor: Supervisor, *, require_auth: bool, assets: Path | None) -> None:
        self.sup = supervisor
        self.require_auth = require_auth
        self.assets = assets
        self.history = model.History(supervisor)
        self.dlq = model.DlqReader()
        self.sessions: dict[str, Session] = {}
        # Without login there is one anonymous session; its CSRF token lives as long as we do.
        self.anonymous = Session(None, expires=float("inf"))

    # --- sessions ------------------------------------------------------------------
    def session(self, request: web.Request) -> Session | None:
        if not self.require_auth:
            return self.anonymous
        token = request.cookies.get(SESSION_COOKIE, "")
        s = self.sessions.get(token)
        if s is None or s.expires < time.time():
            self.sessions.pop(token, None)
            return None
        return s

    def check_login(self, user: str, password: str) -> bool:
        want = self.sup.users.get(user)
        # Compare even for unknown users so timing does not tell which users exist.
        ok = hmac.compare_digest(password.encode(), (want or secrets.token_hex(16)).encode())
        return ok and want is not None


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


def _loopback_host(request: web.Request) -> bool:
    """Without a login, only loopback names may be asked for: a DNS-rebinding page
    (evil.example resolving to 127.0.0.1) would otherwise be same-origin with us and
    could read the CSRF token."""
    host = request.host
    name = host if host.endswith("]") else host.rsplit(":", 1)[0]
    return name.lower() in LOOPBACK_HOSTS


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site form or fetch (they always send Origin)
    return origin == f"{request.scheme}://{request.host}"


def _json(data: Any, status: int = 200) -> web.Response:
    """Relaxed Extended JSON, as documented in docs/console.md."""
    return web.Response(
        text=model.ext_json(data, None), status=status, content_type="application/json"
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def make_app(console: Console) -> web.Application:
    @web.middleware
    async def security(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not console.require_auth and not _loopback_host(request):
            return _error(403, "this console answers loopback host names only (Host header refused)")
        path = request.path
        public = path.startswith(("/static/", "/assets/")) or path == "/login"
        sess = console.session(request)
        if sess is None and not public:
            if path.startswith("/api/"):
                return _error(401, "log in first")
            raise web.HTTPFound("/login")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if not _same_origin(request):
                return _error(403, "cross-origin request refused")
            if path != "/login":
                sent = request.headers.get("X-CSRF-Token", "")
                if sess is None or not hmac.compare_digest(sent.encode(), sess.csrf.encode()):
                    return _error(403, "missing or wrong CSRF token")
        request["session"] = sess
        resp = await handler(request)
        resp.headers["Content-Security-Policy"] = _CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    shell = (STATIC / "shell.html").read_text()

    def page(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        assert kind in PAGES

        async def handler(request: web.Request) -> web.Response:
            sess: Session = request["session"]
            # Only server-made values go into the shell: the page kind and a hex token.
            html = shell.replace("{{page}}", kind).replace("{{csrf}}", sess.csrf)
            html = html.replace("{{charts}}", "1" if console.assets else "0")
            html = html.replace("{{auth}}", "1" if console.require_auth else "0")
            return web.Response(text=html, content_type="text/html")

        return handler

    async def login_page(request: web.Request) -> web.Response:
        if not console.require_auth:
            raise web.HTTPFound("/")
        failed = "Wrong user or password." if request.query.get("failed") else ""
        html = (STATIC / "login.html").read_text().replace("{{failed}}", failed)
        return web.Response(text=html, content_type="text/html")

    async def login(request: web.Request) -> web.Response:
        if not console.require_auth:
            raise web.HTTPFound("/")
        form = await request.post()
        user, password = str(form.get("user", "")), str(form.get("password", ""))
        host = request.remote or ""
        wait = THROTTLE.delay(host)  # the wire port's login throttle covers the console too
        if wait:
            await asyncio.sleep(wait)
        if not console.check_login(user, password):
            log.warning("console: failed login for %r from %s", user, request.remote)
            THROTTLE.failed(host)
            await asyncio.sleep(FAILED_LOGIN_DELAY)  # slows down password guessing
            raise web.HTTPFound("/login?failed=1")
        token = secrets.token_urlsafe(32)
        console.sessions[token] = Session(user)
        resp = web.HTTPFound("/")
        resp.set_cookie(
            SESSION_COOKIE, token, httponly=True, samesite="Strict", max_age=SESSION_SECONDS,
            secure=request.secure, path="/",
        )
        raise resp

    async def logout(request: web.Request) -> web.Response:
        console.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        resp = _json({})
        resp.del_cookie(SESSION_COOKIE, path="/")
        return resp

    async def api_processors(request: web.Request) -> web.Response:
        return _json({"processors": model.processor_rows(console.sup, console.history)})

    async def api_processor(request: web.Request) -> web.Response:
        try:
            return _json(model.processor_detail(console.sup, console.history, request.match_info["name"]))
        except model.NotFound as e:
            return _error(404, str(e))

    async def api_dlq(request: web.Request) -> web.Response:
        try:
            return _json(await console.dlq.last(console.sup, request.match_info["name"]))
        except model.NotFound as e:
            return _error(404, str(e))

    async def api_sample(request: web.Request) -> web.Response:
        """A ``sample()`` cursor kept by the page: pass back ``cursor`` to continue it."""
        name = request.match_info["name"]
        rec = console.sup.store.get(name)
        if rec is None:
            return _error(404, f"stream processor '{name}' does not exist")
        if rec.state != "STARTED":
            return _json({"cursor": "0", "docs": [], "note": f"processor is {rec.state}"})
        try:
            # Cursor ids are 62-bit: they travel as strings (JavaScript numbers hold 53 bits).
            cursor = int(request.query.get("cursor", "0"))
        except ValueError:
            return _error(400, "cursor must be an integer")
        try:
            if cursor <= 0 or cursor not in console.sup.cursors:
                cursor = console.sup.start_sample(name, None)
            docs, cursor = await console.sup.get_more(name, cursor)
        except CommandError as e:
            return _json({"cursor": "0", "docs": [], "note": e.errmsg})
        return _json({"cursor": str(cursor), "docs": [model.ext_json(d) for d in docs]})

    async def api_action(request: web.Request) -> web.Response:
        action = ACTIONS.get(request.match_info["action"])
        if action is None:
            return _error(404, f"no such action: {request.match_info['action']}")
        name = request.match_info["name"]
        user = request["session"].user
        if console.require_auth and console.sup.roles.get(user or "", "owner") != "owner":
            return _error(403, f"user '{user}' has the role 'read'; only 'owner' may {request.match_info['action']} processors")
        try:
            await action(console.sup, name)
        except CommandError as e:
            return _error(400, e.errmsg)
        log.info("console: %s %s by %s", request.match_info["action"], name, request["session"].user)
        return _json({"ok": 1})

    async def api_connections(request: web.Request) -> web.Response:
        return _json({"connections": model.connections(console.sup)})

    async def asset(request: web.Request) -> web.StreamResponse:
        names = {"uPlot.iife.min.js", "uPlot.min.css"}
        fname = request.match_info["file"]
        if console.assets is None or fname not in names:
            return _error(404, "chart library not installed: run scripts/browser.sh assets")
        return web.FileResponse(console.assets / fname)

    app = web.Application(middlewares=[security], client_max_size=64 * 1024)
    app.router.add_get("/", page("processors"))
    app.router.add_get("/processors/{name}", page("processor"))
    app.router.add_get("/connections", page("connections"))
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/api/processors", api_processors)
    app.router.add_get("/api/processors/{name}", api_processor)
    app.router.add_get("/api/processors/{name}/dlq", api_dlq)
    app.router.add_get("/api/processors/{name}/sample", api_sample)
    app.router.add_post("/api/processors/{name}/{action}", api_action)
    app.router.add_get("/api/connections", api_connections)
    app.router.add_get("/assets/{file}", asset)
    app.router.add_static("/static/", STATIC)

    async def on_startup(app: web.Application) -> None:
        console.history.start()

    async def on_cleanup(app: web.Application) -> None:
        await console.history.stop()
        console.dlq.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
