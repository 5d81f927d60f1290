"""Layering (docs/architecture.md#compile--plan--flow): ``compile_pipeline`` resolves every
connection and parses every adapter setting once, builds no source or sink, and
``build_flow`` wires that compiled pipeline without compiling it again."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import TestingSink, run_main

import translator.compile as compile_mod
from sinks.kafka import EmitSettings
from sinks.mongo import MergeSettings
from sources.changestream import ChangeStreamSettings
from sources.kafka import KafkaSourceSettings
from sources.solar import SolarConfig
from translator.compile import build_flow, compile_pipeline, make_sinks, make_source
from translator.compiled import CompiledPipeline
from translator.connections import Connection, ConnectionRegistry
from translator.errors import TranslateError
from translator.ir import DlqTarget
from translator.options import ProcessorOptions
from translator.parse import parse_pipeline

REPO = Path(__file__).resolve().parents[2]

KAFKA = Connection(name="k", type="kafka", bootstrap_servers="127.0.0.1:9")
MONGO = Connection(name="m", type="mongodb", uri="mongodb://127.0.0.1:9/")
NO_URI = Connection(name="nouri", type="mongodb")
WEB = Connection(name="web", type="https", url="https://example.invalid/hook")


def reg() -> ConnectionRegistry:
    return ConnectionRegistry({c.name: c for c in (KAFKA, MONGO, NO_URI, WEB)})


DOCS = [{"_id": 1, "a": 2}, {"_id": 2, "a": 5}, {"_id": 3, "a": "x"}]
PIPELINE: list[dict[str, Any]] = [
    {"$source": {"documents": DOCS}},
    {"$addFields": {"b": {"$multiply": ["$a", 10]}}},
    {"$project": {"_id": 1, "b": 1}},
]


def plans() -> int:
    return compile_mod.PLANS_COMPILED


def _run(p: CompiledPipeline, options: ProcessorOptions | None = None) -> tuple[list[Any], list[Any]]:
    out: list[list[Any]] = []
    dlq: list[list[Any]] = []
    run_main(build_flow(p, options, output_sink=TestingSink(out), dlq_sink=TestingSink(dlq), flow_id="layering"))
    return [d for b in out for d in b], [d for b in dlq for d in b]


def test_a_flow_built_from_compile_pipeline_compiles_its_plan_once() -> None:
    opts = ProcessorOptions(name="once")
    before = plans()
    p = compile_pipeline(PIPELINE, options=opts)
    assert plans() == before + 1
    assert p.plan is not None and p.options == opts
    out, dlq = _run(p, opts)
    assert plans() == before + 1  # build_flow used the compiled plan
    assert out == [{"_id": 1, "b": 20}, {"_id": 2, "b": 50}]
    assert [(d["doc"]["_id"], d["errInfo"]["reason"]) for d in dlq] == [
        (3, "Failed to process input document in $addFields stage (pipeline[1].$addFields): "
            "$multiply only supports numeric types, not string")
    ]
    # Other tuning than what was compiled: the plan is compiled again, results are the same.
    out2, dlq2 = _run(p, ProcessorOptions(name="once", fast_paths=False))
    assert plans() == before + 2
    assert out2 == out and [d["errInfo"] for d in dlq2] == [d["errInfo"] for d in dlq]


def test_the_dlq_target_alone_does_not_recompile_the_plan() -> None:
    opts = ProcessorOptions(name="once")
    p = compile_pipeline(PIPELINE, options=opts)
    before = plans()
    out, _ = _run(p, ProcessorOptions(name="once", dlq=DlqTarget("m", "db", "dlq")))
    assert plans() == before
    assert out == [{"_id": 1, "b": 20}, {"_id": 2, "b": 50}]


ADAPTERS = [
    ("sinks.mongo", "MergeSink"),
    ("sinks.kafka", "KafkaEmitSink"),
    ("sinks.mongo_dlq", "MongoDlqSink"),
    ("sinks.mongo_dlq", "DlqWriter"),
    ("sources.kafka", "KafkaSource"),
    ("sources.changestream", "ChangeStreamSource"),
    ("sources.solar", "SolarSource"),
    ("sources.documents", "DocumentsSource"),
]


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the adapter classes constructed (the real constructors still run)."""
    made: list[str] = []
    for mod, name in ADAPTERS:
        cls = getattr(importlib.import_module(mod), name)

        def spy(self: Any, *a: Any, _orig: Any = cls.__init__, _name: str = name, **kw: Any) -> None:
            made.append(_name)
            _orig(self, *a, **kw)

        monkeypatch.setattr(cls, "__init__", spy)
    yield made


def test_compile_pipeline_builds_no_source_or_sink(built: list[str]) -> None:
    opts = ProcessorOptions(name="p", dlq=DlqTarget("m", "db", "dlq"))
    kafka = compile_pipeline(
        [{"$source": {"connectionName": "k", "topic": "in"}}, {"$emit": {"connectionName": "k", "topic": "out", "config": {"acks": 1}}}],
        reg(), opts, require_sink=True,
    )
    merge = compile_pipeline(
        [{"$source": {"connectionName": "m", "db": "d", "coll": "c"}},
         {"$merge": {"into": {"connectionName": "m", "db": "d", "coll": "out"}, "whenMatched": [{"$set": {"x": 1}}]}}],
        reg(), opts, require_sink=True,
    )
    sample = compile_pipeline([{"$source": {"connectionName": "sample_stream_solar", "config": {"rate": 5}}}], reg(), opts)
    assert built == []
    assert isinstance(kafka.source_settings, KafkaSourceSettings) and kafka.source_settings.topics == ("in",)
    assert isinstance(kafka.sink_settings, EmitSettings) and kafka.sink_settings.acks == "1"
    assert isinstance(merge.source_settings, ChangeStreamSettings)
    assert isinstance(merge.sink_settings, MergeSettings) and merge.sink_settings.conn == MONGO
    assert sample.source_settings == SolarConfig(rate=5.0) and sample.sink_settings is None
    assert (kafka.connections.source, kafka.connections.sink, kafka.connections.dlq) == (KAFKA, KAFKA, MONGO)
    assert (merge.connections.source, merge.connections.sink) == (MONGO, MONGO)

    # The adapters are built from those settings, without the registry.
    make_source(kafka)
    make_sinks(kafka)
    make_source(merge)
    make_sinks(merge)
    make_source(sample)
    assert built == ["KafkaSource", "MongoDlqSink", "KafkaEmitSink", "ChangeStreamSource", "MongoDlqSink", "MergeSink", "SolarSource"]


def test_only_a_compiled_pipeline_is_wired() -> None:
    """One path from a pipeline to a flow: ``compile_pipeline`` resolves and checks, then
    ``build_flow`` / ``make_sinks`` wire what it resolved (no registry, no bare IR)."""
    with pytest.raises(TypeError) as e:
        build_flow(parse_pipeline(PIPELINE))
    assert str(e.value) == "build_flow wires what compile_pipeline returns, not a bare IR pipeline"
    # run_pipeline's compilation leaves the sink unresolved; it replaces both sinks.
    unchecked = compile_pipeline([*PIPELINE, {"$merge": {"into": {"connectionName": "m", "db": "d", "coll": "c"}}}],
                                 check_sink_connection=False)
    with pytest.raises(TranslateError) as te:
        make_sinks(unchecked)
    assert str(te.value) == "pipeline[3].$merge: the sink's connection was not resolved when the pipeline was compiled"
    # A DLQ target other than the compiled one has no resolved connection.
    p = compile_pipeline(PIPELINE, reg(), ProcessorOptions(name="p"))
    with pytest.raises(TranslateError) as te:
        make_sinks(p, ProcessorOptions(name="p", dlq=DlqTarget("m", "db", "dlq")))
    assert str(te.value) == "options.dlq.connectionName: connection 'm' was not resolved when the pipeline was compiled"


def test_io_stage_connections_are_resolved_once_and_carried() -> None:
    p = compile_pipeline(
        [{"$source": {"documents": []}},
         {"$lookup": {"from": {"connectionName": "m", "db": "d", "coll": "c"}, "localField": "a", "foreignField": "b", "as": "j"}},
         {"$https": {"connectionName": "web", "as": "h"}}],
        reg(),
    )
    assert p.connections.stages == (("pipeline[1].$lookup", MONGO), ("pipeline[2].$https", WEB))
    assert p.connections.source is None


SETTINGS_ERRORS = [
    ([{"$merge": {"into": {"connectionName": "m", "db": "a.b", "coll": "c"}}}],
     "pipeline[1].$merge.into.db: invalid database name 'a.b': it contains '.'"),
    ([{"$merge": {"into": {"connectionName": "nouri", "db": "d", "coll": "c"}}}],
     "pipeline[1].$merge.into.connectionName: connection 'nouri' has no uri"),
    ([{"$merge": {"into": {"connectionName": "k", "db": "d", "coll": "c"}}}],
     "pipeline[1].$merge.into.connectionName: connection 'k' is of type 'kafka'; a MongoDB connection (type 'atlas' or 'mongodb') is needed"),
    ([{"$merge": {"into": {"connectionName": "m", "db": "d", "coll": "c"}, "whenMatched": [{"$match": {}}]}}],
     "pipeline[1].$merge.whenMatched[0].$match: stage '$match' is not supported in a $merge whenMatched pipeline; "
     "supported: $set, $addFields, $unset, $project, $replaceWith, $replaceRoot"),
    ([{"$emit": {"connectionName": "k", "topic": "t", "config": {"acks": 2}}}],
     "pipeline[1].$emit.config.acks: must be one of -1, 0, 1, 'all'; got 2"),
    ([{"$emit": {"connectionName": "m", "topic": "t"}}],
     "connections.m: connection 'm' is of type 'mongodb', not 'kafka'"),
]


@pytest.mark.parametrize(("sink", "message"), SETTINGS_ERRORS)
def test_sink_settings_fail_at_compile_time_with_their_path(sink: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(TranslateError) as e:
        compile_pipeline([{"$source": {"documents": []}}, *sink], reg(), ProcessorOptions(name="p"))
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"connectionName": "web"}, "pipeline[0].$source.connectionName: connections of type 'https' cannot be used as a $source yet"),
        ({"connectionName": "sample_stream_solar", "config": {"rate": "fast"}}, "pipeline[0].$source.config.rate: expected a number, got string"),
        ({"connectionName": "k"}, "pipeline[0].$source.topic: a Kafka $source needs 'topic' (a string or an array of strings)"),
        ({"connectionName": "k", "topic": "t", "config": {"keyFormat": "xml"}},
         "pipeline[0].$source.config.keyFormat: must be one of binData, string, json, int, long; got 'xml'"),
    ],
)
def test_source_settings_fail_at_compile_time_with_their_path(source: dict[str, Any], message: str) -> None:
    with pytest.raises(TranslateError) as e:
        compile_pipeline([{"$source": source}], reg(), ProcessorOptions(name="p"))
    assert str(e.value) == message


def test_the_translator_imports_no_adapter_module() -> None:
    code = (
        "import sys\n"
        "def adapters(): return sorted(m for m in sys.modules if m.split('.')[0] in ('sinks', 'sources'))\n"
        "import translator.compile, translator.compiled, translator.testing, translator.runtime, translator.loader\n"
        "print(adapters())\n"
        "from translator.testing import run_pipeline\n"
        "run_pipeline([{'$source': {'documents': [{'a': 1}]}}, {'$match': {'a': 1}}])\n"
        "print(adapters())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    # None at import time; a run loads only the adapter it builds (its documents source).
    assert r.stdout.splitlines() == ["[]", "['sources', 'sources.base', 'sources.documents']"]


def test_clients_load_only_for_pipelines_that_use_them() -> None:
    """pymongo's client and aiohttp cost every processor's start-up; a pipeline without
    $lookup/$https (or a MongoDB sink) does not import them."""
    code = textwrap.dedent("""
        import sys
        def clients(): return sorted(m for m in ("pymongo", "aiohttp") if m in sys.modules)
        from translator.testing import run_pipeline
        run_pipeline([{"$source": {"documents": [{"a": 1}]}}, {"$match": {"a": 1}}])
        print(clients())
        from translator.compile import compile_pipeline
        from translator.connections import Connection, ConnectionRegistry
        reg = ConnectionRegistry({"h": Connection(name="h", type="https", url="http://127.0.0.1:1")})
        compile_pipeline([{"$source": {"documents": []}}, {"$https": {"connectionName": "h", "path": "/", "as": "r"}}], reg)
        print(clients())
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines() == ["[]", "['aiohttp']"]


ADAPTER_PACKAGES = ("sinks", "sources", "flows", "service")


def _adapter_imports(path: Path) -> list[str]:
    """Every import of an adapter package in ``path``, at any depth (a function's too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.split(".")[0] in ADAPTER_PACKAGES]
    return found


def test_only_the_builder_tables_import_adapters_even_at_run_time() -> None:
    """The subprocess check above sees the imports a run makes; an import inside a
    function the run did not reach (``$lookup`` retrying a server error) hides from it.
    Only ``translator/compile.py`` builds adapters, so only it names them."""
    offending = [
        hit
        for path in sorted((REPO / "translator").rglob("*.py"))
        if path != REPO / "translator" / "compile.py"
        for hit in _adapter_imports(path)
    ]
    assert offending == []
    # The scan sees function-level imports (compile.py's lazy builders are some).
    assert "translator/compile.py:" in " ".join(_adapter_imports(REPO / "translator" / "compile.py"))
