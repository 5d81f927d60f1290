"""``$https``: https://www.mongodb.com/docs/atlas/atlas-stream-processing/sp-agg-https/

One request per document to an ``https`` connection (``url`` + ``headers`` from the
registry), sent with aiohttp (a pooled ``ClientSession`` per stage and process, on one
background event loop): a batch's requests run concurrently, at most
:data:`CONCURRENCY` at a time per batch (a batch is one source partition's), and the
documents leave in their input order.

- 2xx: success. The body is read as JSON when the type is ``application/json`` or
  missing, as a string for ``text/plain``; an empty body leaves ``as`` unset.
- 400, 404, 410, 413, 414, 431, another content type, a body that is not JSON, and a
  timeout follow ``onError`` (``dlq``, ``ignore``, ``fail``): ASP applies ``onError`` to
  "HTTPS-related failures" and lists those statuses.
- Any other status (e.g. 500) and a refused or broken connection are retried
  :data:`RETRIES` times with backoff, then fail the processor.
- Timeouts: ``config.requestTimeoutSec`` (default 60) bounds connecting,
  ``config.connectionTimeoutSec`` (default 30) bounds waiting for the response on an
  open connection, as the ASP page describes the two settings.
- The body is the document (or the ``payload`` pipeline's output) as relaxed Extended
  JSON; GET sends a body only when ``payload`` is given.
- ``{$meta: "stream.https"}`` reads ``{url, method, httpStatusCode, responseTimeMs}``.
- The session is closed when the flow ends, by the close hooks ``build_flow`` calls
  (as ``$lookup``'s clients are).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from typing import Any

import aiohttp
from bson import json_util

from translator.enrich.spec import HttpsStage
from translator.errors import TranslateError
from translator.mql.expr import Ctx, Expr, Vars, compile_expr, const_value
from translator.mql.values import MISSING, bson_type
from translator.stages import (
    BATCH,
    DlqFn,
    Rec,
    Step,
    compile_steps,
    copy_set,
    failure_reason,
    run_chain,
)

CONCURRENCY = 16  # requests in flight per batch
RETRIES = 3  # extra attempts for 5xx-like statuses and connection errors
BACKOFF_INITIAL_S = 0.2
CLOSE_TIMEOUT_S = 10.0  # closing the session at the end of the flow
ON_ERROR_STATUSES = frozenset({400, 404, 410, 413, 414, 431})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

log = logging.getLogger("mqlflow.https")


class HttpsProcessorError(RuntimeError):
    """A failure ASP answers by failing the processor."""


# ---- one event loop per process for all $https stages -----------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="mqlflow-https", daemon=True).start()
            _loop = loop
        return _loop


# ---- the request ------------------------------------------------------------------------


class _OnError(Exception):
    """A failure that follows onError; ``meta`` is set when a response arrived."""

    def __init__(self, message: str, meta: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.meta = meta


def _parse_json_strings(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _parse_json_strings(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_parse_json_strings(x) for x in v]
    if isinstance(v, str) and v[:1] in ("{", "["):
        try:
            return _parse_json_strings(json_util.loads(v))
        except ValueError:
            return v
    return v


class HttpsOp:
    def __init__(self, stage: HttpsStage, url: str, conn_headers: dict[str, str]) -> None:
        self.stage = stage
        self.base = url.rstrip("/")
        self.conn_headers = dict(conn_headers)
        p = stage.path
        # "<subpath>|<expr>": compiled as any MQL expression (a "$field" string is a field
        # path), as $merge's into.db/coll are; a constant string is kept as the string.
        self.url_path: str | Expr | None = None
        if stage.url_path is not None:
            fn = compile_expr(stage.url_path, Ctx(f"{p}.path"))
            c = const_value(fn)
            self.url_path = c if isinstance(c, str) else fn
        self.params = [(k, compile_expr(x, Ctx(f"{p}.parameters.{k}"))) for k, x in stage.parameters]
        self.headers = [(k, compile_expr(x, Ctx(f"{p}.headers.{k}"))) for k, x in stage.headers]
        self.payload: tuple[Step, ...] | None = None
        if stage.payload is not None:
            from translator.parse import STAGE_PARSERS

            parsed = [
                STAGE_PARSERS[n](s[n], f"{p}.payload[{i}].{n}") for i, s in enumerate(stage.payload) for n in s
            ]
            self.payload = compile_steps(tuple(parsed))
        self.as_parts = tuple(stage.as_field.split("."))
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=stage.request_timeout_s, sock_read=stage.connection_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    # -- building a request (in the worker thread; failures go to the DLQ)
    def build(self, doc: dict[str, Any], v: Vars) -> tuple[str, dict[str, str], dict[str, str], bytes | None]:
        st = self.stage
        url = self.base
        if self.url_path is not None:
            sub = self.url_path if isinstance(self.url_path, str) else self.url_path(doc, v)
            if not isinstance(sub, str):
                raise _BuildError(f"{st.path}.path", f"must evaluate to a string, got {bson_type(sub)}")
            if sub:
                url = f"{url}/{sub.lstrip('/')}"
        params: dict[str, str] = {}
        for k, f in self.params:
            x = f(doc, v)
            if isinstance(x, bool):
                params[k] = "true" if x else "false"
            elif isinstance(x, (int, float, str)) and x is not MISSING:
                params[k] = str(x)
            else:
                raise _BuildError(
                    f"{st.path}.parameters.{k}", f"must evaluate to a number, string or boolean, got {bson_type(x)}"
                )
        headers = {k: x for k, x in self.conn_headers.items() if _TOKEN.match(k) and not _BAD_VALUE.search(x)}
        for k, f in self.headers:
            x = f(doc, v)
            if not isinstance(x, str):
                raise _BuildError(f"{st.path}.headers.{k}", f"must evaluate to a string, got {bson_type(x)}")
            if _TOKEN.match(k) and not _BAD_VALUE.search(x):  # invalid names/values are not sent
                headers[k] = x
        body: bytes | None = None
        if self.payload is not None or st.method != "GET":
            src = doc
            if self.payload is not None:
                reasons: list[str] = []
                out = run_chain(self.payload, [(doc, 0)], lambda r, d: reasons.append(r), v)
                if reasons:
                    raise _PayloadError(reasons[0])
                src = out[0][0]
            body = json_util.dumps(src, json_options=json_util.RELAXED_JSON_OPTIONS).encode()
            headers.setdefault("Content-Type", "application/json")
        return url, params, headers, body

    # -- sending (on the event loop)
    async def _session_get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), timeout=self.timeout, raise_for_status=False
            )
        return self._session

    async def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def close(self) -> None:
        """When the flow ends: close the pooled session and its connections (on the
        loop that uses them); a later run of the same compiled pipeline opens another."""
        loop = _loop
        if self._session is None or loop is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(CLOSE_TIMEOUT_S)
        except Exception as exc:  # the flow's results are written; say so and go on
            log.warning("%s: closing the HTTP session failed: %s", self.stage.path, exc)

    def step(self) -> Step:
        return Step(BATCH, self.run, "$https", self.stage.path)

    async def send(self, req: tuple[str, dict[str, str], dict[str, str], bytes | None]) -> tuple[Any, dict[str, Any]]:
        """(parsed body or MISSING, meta); raises _OnError or HttpsProcessorError."""
        url, params, headers, body = req
        st = self.stage
        session = await self._session_get()
        delay = BACKOFF_INITIAL_S
        last = ""
        for attempt in range(RETRIES + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay *= 2
            t0 = time.monotonic()
            try:
                async with session.request(st.method, url, params=params, headers=headers, data=body) as resp:
                    raw = await resp.read()
                    status = resp.status
                    meta: dict[str, Any] = {
                        "url": str(resp.url),
                        "method": st.method,
                        "httpStatusCode": resp.status,
                        "responseTimeMs": int((time.monotonic() - t0) * 1000),
                    }
                    ctype = resp.headers.get("Content-Type")
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise _OnError(f"request to {url} timed out ({type(exc).__name__})") from None
            except aiohttp.ClientError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if 200 <= status < 300:
                return self._body(raw, ctype, meta), meta
            if status in ON_ERROR_STATUSES:
                raise _OnError(f"request to {url} failed with HTTP status {status}", meta)
            last = f"HTTP status {status}"
        raise HttpsProcessorError(
            f"{st.path}: request to {url} failed after {RETRIES + 1} attempts ({last}); the processor stops"
        )

    def _body(self, raw: bytes, ctype: str | None, meta: dict[str, Any]) -> Any:
        if not raw:
            return MISSING
        mime = (ctype or "application/json").split(";")[0].strip().lower()
        if mime == "text/plain":
            return raw.decode("utf-8", errors="replace")
        if mime != "application/json":
            raise _OnError(f"unsupported response Content-Type {mime!r} (application/json or text/plain)", meta)
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise _OnError(f"the response is not valid JSON ({exc})", meta) from None
        return _parse_json_strings(value) if self.stage.parse_json_strings else value

    async def _all(self, reqs: list[Any]) -> list[Any]:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(r: Any) -> Any:
            if isinstance(r, (BaseException, _Dlq)):
                return r
            async with sem:
                try:
                    return await self.send(r)
                except (_OnError, HttpsProcessorError) as exc:
                    return exc

        return await asyncio.gather(*(one(r) for r in reqs))

    # -- the batch step
    def run(self, recs: list[Rec], dlq: DlqFn, vars_: Vars) -> list[Rec]:
        st = self.stage
        reqs: list[Any] = []
        for d, _ in recs:
            try:
                reqs.append(self.build(d, vars_))
            except _PayloadError as exc:
                reqs.append(exc)
            except _BuildError as exc:
                reqs.append(_Dlq(f"Failed to process input document in $https stage ({exc.path}): {exc}"))
            except Exception as exc:
                reqs.append(_Dlq(failure_reason("$https", st.path, exc)))
        results = asyncio.run_coroutine_threadsafe(self._all(reqs), _event_loop()).result()
        out: list[Rec] = []
        for (d, t), res in zip(recs, results, strict=True):
            if isinstance(res, _Dlq):
                dlq(res.reason, d)
            elif isinstance(res, _PayloadError):
                dlq(str(res), d)
            elif isinstance(res, HttpsProcessorError):
                raise res
            elif isinstance(res, _OnError):
                reason = f"Failed to process input document in $https stage ({st.path}): {res}"
                if st.on_error == "fail":
                    raise HttpsProcessorError(f"{st.path}: {res}; onError is 'fail', the processor stops")
                if st.on_error == "dlq":
                    dlq(reason, d)
                else:
                    out.append((_with_meta(d, res.meta) if res.meta else d, t))
            else:
                value, meta = res
                doc = _with_meta(d, meta)
                if value is not MISSING:
                    doc = copy_set(doc, self.as_parts, value)
                out.append((doc, t))
        return out


class _Dlq:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class _PayloadError(Exception):
    pass


class _BuildError(Exception):
    """A header, parameter or path value of the wrong type (the document goes to the DLQ)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


def _with_meta(doc: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    prev = doc.get("_stream_meta")
    out = dict(doc)
    out["_stream_meta"] = {**prev, "https": meta} if isinstance(prev, dict) else {"https": meta}
    return out


def compile_https(stage: HttpsStage, conn: Any) -> HttpsOp:
    """Create time: ``conn`` (resolved by the compiler, None when no registry is bound)
    must be an ``https`` connection with a ``url``."""
    if conn is None:
        raise TranslateError(stage.path, "$https needs a connection registry here")
    if conn.type != "https" or not conn.url:
        raise TranslateError(
            f"{stage.path}.connectionName",
            f"connection '{conn.name}' is of type '{conn.type}'; $https needs a connection of type 'https' with a url",
        )
    return HttpsOp(stage, conn.url, conn.headers)

