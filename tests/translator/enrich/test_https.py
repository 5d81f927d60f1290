"""$https against a real HTTP server the test starts on loopback (aiohttp.web in a
thread): success and bodies, each error class, slow responses, a server that goes away."""

from __future__ import annotations

import asyncio
import gc
import http.server
import re
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.translator.enrich.enrichhelpers import Server
from translator.connections import Connection, ConnectionRegistry
from translator.enrich.https import _event_loop as https_loop
from translator.enrich.steps import bound
from translator.errors import TranslateError
from translator.parse import parse_pipeline
from translator.stages import compile_steps
from translator.testing import run_pipeline


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def reg(s: Server) -> ConnectionRegistry:
    return ConnectionRegistry({
        "api": Connection(name="api", type="https", url=f"http://127.0.0.1:{s.port}",
                          headers={"Authorization": "Bearer t0k"}),
        "mongo": Connection(name="mongo", type="mongodb", uri="mongodb://127.0.0.1:1/"),
    })


def run(s: Server, docs: list[dict[str, Any]], https: dict[str, Any], *after: dict[str, Any]) -> Any:
    return run_pipeline([{"$source": {"documents": docs}}, {"$https": {"connectionName": "api", "as": "r", **https}}, *after],
                        registry=reg(s))


def failure(fn: Any) -> str:
    """The messages of the exception chain a failed run raises (Bytewax wraps the stage's)."""
    try:
        fn()
    except Exception as exc:
        msgs = []
        e: BaseException | None = exc
        while e is not None:
            msgs.append(str(e))
            e = e.__cause__ or e.__context__
        return " | ".join(msgs)
    raise AssertionError("the run did not fail")


def _out(r: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k not in ("_ts", "_stream_meta")} for d in r.output]


def test_post_with_path_parameters_headers_payload_and_meta(server: Server) -> None:
    docs = [{"_id": i, "dev": f"d{i}", "n": i} for i in range(20)]
    r = run(server, docs, {
        "path": {"$concat": ["echo/", "$dev"]}, "method": "POST",
        "parameters": {"n": "$n", "flag": True},
        "headers": {"X-Dev": "$dev", "Bad Name": "x"},
        "payload": [{"$project": {"_id": 0, "dev": 1, "when": {"$toDate": 0.0}}}],
    }, {"$addFields": {"meta": {"$meta": "stream.https"}}})
    assert [d["_id"] for d in r.output] == list(range(20))  # input order kept
    first = r.output[3]
    assert first["r"] == {
        "method": "POST", "path": "/echo/d3", "query": {"n": "3", "flag": "true"}, "xdev": "d3",
        "auth": "Bearer t0k", "bad": None,  # an invalid header name is not sent
        "body": {"dev": "d3", "when": {"$date": "1970-01-01T00:00:00Z"}},  # relaxed Extended JSON
    }
    meta = first["meta"]
    assert meta["url"] == f"http://127.0.0.1:{server.port}/echo/d3?n=3&flag=true"
    assert (meta["method"], meta["httpStatusCode"]) == ("POST", 200)
    assert isinstance(meta["responseTimeMs"], int) and meta["responseTimeMs"] >= 0
    assert r.dlq == []


def test_get_sends_no_body_and_response_types(server: Server) -> None:
    r = run(server, [{"_id": 1}], {"path": "echo/x"})
    assert r.output[0]["r"]["body"] is None and r.output[0]["r"]["method"] == "GET"
    assert _out(run(server, [{"_id": 1}], {"path": "text"})) == [{"_id": 1, "r": "hello"}]
    assert _out(run(server, [{"_id": 1}], {"path": "empty"})) == [{"_id": 1}]  # as is left unset
    # aiohttp.web always sends a Content-Type: http.server answers without one
    class NoType(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "8")
            self.end_headers()
            self.wfile.write(b'{"a": 1}')

        def log_message(self, *args: Any) -> None:
            pass

    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoType)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        r = run_pipeline(
            [{"$source": {"documents": [{"_id": 1}]}}, {"$https": {"connectionName": "plain", "as": "r"}}],
            registry=ConnectionRegistry({"plain": Connection(name="plain", type="https", url=f"http://127.0.0.1:{plain.server_port}")}),
        )
        assert _out(r) == [{"_id": 1, "r": {"a": 1}}]  # a missing type is read as JSON
    finally:
        plain.shutdown()
        plain.server_close()
    assert _out(run(server, [{"_id": 1}], {"path": "jsonstr", "config": {"parseJsonStrings": True}})) == [
        {"_id": 1, "r": {"inner": {"a": [1, {"b": "2"}]}, "s": "x"}}
    ]
    assert _out(run(server, [{"_id": 1}], {"path": "jsonstr"})) == [{"_id": 1, "r": {"inner": '{"a": [1, {"b": "2"}]}', "s": "x"}}]


@pytest.mark.parametrize("code", [400, 404, 410, 413, 414, 431])
def test_listed_statuses_follow_on_error(server: Server, code: int) -> None:
    r = run(server, [{"_id": 1}], {"path": f"status/{code}"})  # default onError: dlq
    assert r.output == []
    assert r.dlq[0]["errInfo"]["reason"] == (
        f"Failed to process input document in $https stage (pipeline[1].$https): "
        f"request to http://127.0.0.1:{server.port}/status/{code} failed with HTTP status {code}"
    )
    r = run(server, [{"_id": 1}], {"path": f"status/{code}", "onError": "ignore"}, {"$addFields": {"st": {"$meta": "stream.https.httpStatusCode"}}})
    assert _out(r) == [{"_id": 1, "st": code}] and r.dlq == []
    assert re.search(r"pipeline\[1\].\$https: request to .* failed with HTTP status .*onError is 'fail'",
                     failure(lambda: run(server, [{"_id": 1}], {"path": f"status/{code}", "onError": "fail"})))


def test_wrong_content_type_and_bad_json_follow_on_error(server: Server) -> None:
    r = run(server, [{"_id": 1}], {"path": "html"})
    assert r.dlq[0]["errInfo"]["reason"].endswith("unsupported response Content-Type 'text/html' (application/json or text/plain)")
    r = run(server, [{"_id": 1}], {"path": "badjson", "onError": "ignore"})
    assert _out(r) == [{"_id": 1}]


def test_other_statuses_fail_the_processor_after_bounded_retries(server: Server) -> None:
    assert re.search(r"pipeline\[1\].\$https: request to .*/status/500 failed after 4 attempts \(HTTP status 500\)",
                     failure(lambda: run(server, [{"_id": 1}], {"path": "status/500", "onError": "ignore"})))
    assert len([c for c in server.calls if c["path"] == "/status/500"]) == 4
    server.flaky_left = 2  # two 503s, then success: retried, nothing lost
    assert _out(run(server, [{"_id": 1}], {"path": "flaky"})) == [{"_id": 1, "r": {"ok": 1}}]


def test_slow_responses_run_concurrently_and_time_out_by_on_error(server: Server) -> None:
    t0 = time.monotonic()
    r = run(server, [{"_id": i} for i in range(16)], {"path": "slow/500"})
    assert len(r.output) == 16 and all(d["r"] == {"slow": True} for d in r.output)
    assert time.monotonic() - t0 < 5.0  # 16 x 0.5 s in parallel, not 8 s
    r = run(server, [{"_id": 1}], {"path": "slow/3000", "config": {"connectionTimeoutSec": 1}})
    assert r.output == []
    assert "timed out" in r.dlq[0]["errInfo"]["reason"]


def test_failing_header_or_parameter_goes_to_the_dlq(server: Server) -> None:
    r = run(server, [{"_id": 1, "n": 5}, {"_id": 2, "n": "x"}], {"path": "echo/a", "headers": {"X-Dev": "$n"}})
    assert [(d["_id"], d["r"]["xdev"]) for d in r.output] == [(2, "x")]
    assert [d["doc"]["_id"] for d in r.dlq] == [1]  # not sent: the server saw only "x"
    assert [c["xdev"] for c in server.calls] == ["x"]
    assert r.dlq[0]["errInfo"]["reason"] == (
        "Failed to process input document in $https stage (pipeline[1].$https.headers.X-Dev): "
        "must evaluate to a string, got int"
    )


def test_server_going_away_mid_run_fails_the_processor(server: Server) -> None:
    docs = [{"_id": i} for i in range(60)]
    stopper = threading.Timer(1.0, server.stop)
    stopper.start()
    msg = failure(lambda: run_pipeline(
        [{"$source": {"documents": docs}}, {"$throttle": {"messagesPerSec": 20}},
         {"$https": {"connectionName": "api", "path": "echo/x", "as": "r"}}],
        {"name": "t", "batchSize": 5}, reg(server)))
    assert re.search(r"pipeline\[2\].\$https: request to .* failed after 4 attempts \(ClientConnectorError", msg), msg
    stopper.join()
    assert 1 <= len(server.calls) < 60  # some went through before it went away


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"connectionName": "mongo", "as": "r"}, "pipeline[1].$https.connectionName",
         "connection 'mongo' is of type 'mongodb'; $https needs a connection of type 'https' with a url"),
        ({"connectionName": "api", "as": "r", "method": "FETCH"}, "pipeline[1].$https.method",
         "expected one of GET, POST, PUT, PATCH, DELETE; got 'FETCH'"),
        ({"connectionName": "api", "as": "r", "onError": "retry"}, "pipeline[1].$https.onError",
         "expected one of dlq, ignore, fail; got 'retry'"),
        ({"connectionName": "api", "as": "r", "payload": [{"$match": {}}]}, "pipeline[1].$https.payload[0].$match",
         "stage '$match' is not allowed in a $https payload; allowed: $addFields, $project, $replaceRoot, $replaceWith, $set, $unset"),
        ({"connectionName": "api"}, "pipeline[1].$https", "missing required field 'as'"),
        ({"connectionName": "api", "as": "r", "config": {"timeout": 1}}, "pipeline[1].$https.config.timeout",
         "unknown field 'timeout'; allowed: connectionTimeoutSec, parseJsonStrings, requestTimeoutSec"),
    ],
)
def test_create_time_errors(server: Server, spec: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(TranslateError) as e:
        run_pipeline([{"$source": {"documents": [{}]}}, {"$https": spec}], registry=reg(server))
    assert (e.value.path, e.value.message) == (path, message)


def test_https_inside_a_window(server: Server) -> None:
    events = [{"_id": i, "ts": f"2024-01-01T00:00:0{i}Z"} for i in range(4)]
    r = run_pipeline(
        [{"$source": {"documents": events, "timeField": {"$dateFromString": {"dateString": "$ts"}}}},
         {"$tumblingWindow": {"interval": {"size": 1, "unit": "minute"}, "pipeline": [
             {"$https": {"connectionName": "api", "path": "echo/w", "as": "r"}},
             {"$group": {"_id": "$r.path", "n": {"$sum": 1}}}]}}],
        registry=reg(server),
    )
    assert [(d["_id"], d["n"]) for d in r.output] == [("/echo/w", 4)]


def _open_connections(s: Server) -> int:
    """Connections the loopback server has open (aiohttp keeps idle ones in its pool)."""

    async def count() -> int:
        assert s.runner is not None and s.runner.server is not None
        return len(s.runner.server.connections)

    return asyncio.run_coroutine_threadsafe(count(), s.loop).result(10)


def _until_open_connections(s: Server, n: int) -> int:
    """The server learns of a closed connection on its own loop: wait (bounded) for ``n``."""
    deadline = time.monotonic() + 10
    got = _open_connections(s)
    while got != n and time.monotonic() < deadline:
        time.sleep(0.05)
        got = _open_connections(s)
    return got


def _unclosed_sessions(seen: list[warnings.WarningMessage]) -> int:
    """aiohttp's ResourceWarnings for a collected, unclosed session or connector."""
    return sum(
        1 for w in seen
        if issubclass(w.category, ResourceWarning)
        and ("Unclosed client session" in str(w.message) or "Unclosed connector" in str(w.message))
    )


def test_a_finished_flow_closes_its_https_session(server: Server) -> None:
    """The flow's close hooks (as for ``$lookup``'s clients) close the stage's session: no
    connection stays open at the server after the run, and collecting the compiled stage
    finds no unclosed session or connector. Both checks see a session left open."""
    gc.collect()  # sessions other tests left behind warn now, not below
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        r = run(server, [{"_id": i, "dev": f"d{i}"} for i in range(20)], {"path": {"$concat": ["echo/", "$dev"]}},
                {"$project": {"p": "$r.path"}})
        assert r.output == [{"_id": i, "p": f"/echo/d{i}"} for i in range(20)]
        assert _until_open_connections(server, 0) == 0
        del r  # the result holds the compiled pipeline, and so the stage and its session
        gc.collect()
        assert _unclosed_sessions(seen) == 0

        # A stage compiled and run outside a flow keeps its connection until its hook runs.
        with bound(reg(server)) as closers:
            (step,) = compile_steps((parse_pipeline([{"$source": {"documents": []}},
                                                     {"$https": {"connectionName": "api", "path": "echo/x", "as": "r"}}]).stages[0],))
        out = step.fn([({"_id": 1}, 0)], lambda *a: None, {})  # type: ignore[call-arg]
        assert [d["r"]["path"] for d, _ in out] == ["/echo/x"]
        assert len(closers) == 1
        assert _until_open_connections(server, 1) == 1
        closers[0]()
        assert _until_open_connections(server, 0) == 0

        # The same warning check sees a session that is collected open.
        async def session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession()

        leak = asyncio.run_coroutine_threadsafe(session(), https_loop()).result(10)
        del leak
        gc.collect()
        assert _unclosed_sessions(seen) >= 1


def test_a_failed_run_closes_its_https_session(server: Server) -> None:
    """A run that fails (``onError: 'fail'`` on a 404 after a successful request) still
    closes the stage's session: no connection stays open, nothing unclosed is collected."""
    gc.collect()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        docs = [{"_id": 1, "p": "echo/ok"}, {"_id": 2, "p": "status/404"}]
        msg = failure(lambda: run(server, docs, {"path": "$p", "onError": "fail"}))
        assert "failed with HTTP status 404" in msg
        assert _until_open_connections(server, 0) == 0
        gc.collect()
        assert _unclosed_sessions(seen) == 0


def test_path_given_as_a_field_path_is_evaluated_per_document(server: Server) -> None:
    """``path: "$p"`` is an expression (a field path), as a ``"$field"`` string is anywhere
    in MQL; a value that is not a string sends that document to the DLQ without a request."""
    docs = [{"_id": 1, "p": "echo/a"}, {"_id": 2, "p": 5}, {"_id": 3, "p": "echo/b"}]
    r = run(server, docs, {"path": "$p"}, {"$project": {"got": "$r.path"}})
    assert r.output == [{"_id": 1, "got": "/echo/a"}, {"_id": 3, "got": "/echo/b"}]
    assert [(d["doc"]["_id"], d["errInfo"]["reason"]) for d in r.dlq] == [
        (2, "Failed to process input document in $https stage (pipeline[1].$https.path): must evaluate to a string, got int")
    ]
