"""The web console of ``mqlflow serve --http-port N`` (see docs/console.md).

Served by aiohttp on the service's own asyncio loop; charts use uPlot, which
``scripts/browser.sh assets`` installs from npm into ``.cache/console-assets``
(or point ``MQLFLOW_CONSOLE_ASSETS`` at a folder holding ``uPlot.iife.min.js`` and
``uPlot.min.css``).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from service.server import LOOPBACK
from service.supervisor import Supervisor
from service.web.app import Console, make_app

ASSETS_ENV = "MQLFLOW_CONSOLE_ASSETS"
_DEFAULT_ASSETS = (
    Path(__file__).resolve().parents[2] / ".cache" / "console-assets" / "node_modules" / "uplot" / "dist"
)


def find_assets() -> Path | None:
    """The folder with uPlot's files, or ``None`` (the console then shows numbers only)."""
    folder = Path(os.environ.get(ASSETS_ENV) or _DEFAULT_ASSETS)
    return folder if (folder / "uPlot.iife.min.js").is_file() else None


@dataclass
class ConsoleServer:
    runner: web.AppRunner
    url: str

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_console(
    supervisor: Supervisor, host: str, port: int, tls: ssl.SSLContext | None = None
) -> ConsoleServer:
    """Bind the console; like the wire service, a non-loopback address needs users, and
    with users every page needs a login, on loopback too. With ``tls`` it is served over
    HTTPS (and its session cookie is ``Secure``)."""
    require_auth = host not in LOOPBACK or bool(supervisor.users)
    if require_auth and not supervisor.users:
        raise RuntimeError(
            f"serving the console on {host} (not loopback) requires a login; pass --users FILE"
        )
    console = Console(supervisor, require_auth=require_auth, assets=find_assets())
    runner = web.AppRunner(make_app(console), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if tls is not None else "http"
    return ConsoleServer(runner, f"{scheme}://{shown}:{bound}/")


__all__ = ["ConsoleServer", "find_assets", "start_console"]
