"""``$setStreamMeta``: https://www.mongodb.com/docs/atlas/atlas-stream-processing/sp-agg-setstreammeta/

Stream metadata lives in the document's ``_stream_meta`` envelope, which
``{$meta: "stream.<field>"}`` reads (e.g. ``$merge.into.coll: {$meta: "stream.coll"}``).
Every value is computed from the input document first, then set on a copy; a failing
expression raises, and the step runner sends that document to the DLQ.
"""

from __future__ import annotations

from typing import Any

from translator.enrich.spec import SetStreamMetaStage
from translator.mql.expr import Ctx, Vars, compile_expr
from translator.stages import MAP, Step, copy_set


def compile_set_stream_meta(stage: SetStreamMetaStage, variables: frozenset[str]) -> Step:
    fields = [
        (parts, compile_expr(spec, Ctx(f"{stage.path}.stream.{'.'.join(parts)}", variables)))
        for parts, spec in stage.fields
    ]

    def set_stream_meta(doc: Any, v: Vars) -> Any:
        values = [(parts, f(doc, v)) for parts, f in fields]
        meta = doc.get("_stream_meta")
        meta = dict(meta) if isinstance(meta, dict) else {}
        for parts, x in values:
            meta = copy_set(meta, parts, x)
        out = dict(doc)
        out["_stream_meta"] = meta
        return out

    return Step(MAP, set_stream_meta, "$setStreamMeta", stage.path)
