"""``$emit`` to a MongoDB time series collection: ``{connectionName, db, coll, timeseries}``
(https://www.mongodb.com/docs/atlas/atlas-stream-processing/sp-agg-emit/).

Every document is inserted, never merged, so this is the ``$merge`` sink of
:mod:`sinks.mongo` with the insert-only plan (``whenMatched: "fail"``) and its batching,
timeouts, retries, stall reporting and DLQ; two things are added before a batch is written:

* a document whose ``timeField`` is missing or not a date goes to the DLQ with the
  server's own reason, since a time series collection refuses it too;
* the first time a namespace is written to, the collection is created with the
  ``timeseries`` options (an existing collection is kept as it is). A server without time
  series collections (FerretDB v1 answers ``NotImplemented``) gets a plain collection
  instead, logged once per namespace; there ``_id`` must be unique, so a repeated ``_id``
  (window results keyed by group, say) goes to the DLQ with the duplicate key error. Drop
  or rename ``_id`` before such an ``$emit`` (``{$project: {_id: 0}}``).
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from typing import Any

from pymongo.errors import CollectionInvalid, OperationFailure

from sinks.mongo import Doc, MergePartition, MergeSettings, MergeSink, _compile_name, make_mode
from translator.connections import Connection
from translator.contracts import coll_name_problem, db_name_problem
from translator.errors import TranslateError
from translator.ir import EmitTimeSeriesStage, MergeStage

log = logging.getLogger("mqlflow.sink")

NOT_IMPLEMENTED = 238  # FerretDB v1's answer to create({timeseries})
NAMESPACE_EXISTS = 48


@dataclass(frozen=True)
class TimeSeriesSettings:
    """Checked and compiled at create time: the insert-only ``$merge`` settings for the
    same connection and names, the ``timeField`` and the collection options."""

    stage: EmitTimeSeriesStage
    merge: MergeSettings
    time_field: str
    options: dict[str, Any]

    @staticmethod
    def from_stage(stage: EmitTimeSeriesStage, conn: Connection) -> TimeSeriesSettings:
        if not conn.uri:
            raise TranslateError(f"{stage.path}.connectionName", f"connection '{conn.name}' has no uri")
        db = _compile_name(stage.db, f"{stage.path}.db", "db", db_name_problem, "$emit ")
        coll = _compile_name(stage.coll, f"{stage.path}.coll", "coll", coll_name_problem, "$emit ")
        inserts = MergeStage(stage.path, stage.connection_name, stage.db, stage.coll, ("_id",), "fail", "insert")
        merge = MergeSettings(inserts, conn, db, coll, (("_id",),), make_mode(inserts))
        return TimeSeriesSettings(stage, merge, stage.time_field, dict(stage.options))


class TimeSeriesSink(MergeSink):
    """Bytewax sink for ``$emit`` to a time series collection (see the module)."""

    kind = "$emit"

    def __init__(self, settings: TimeSeriesSettings, **kw: Any) -> None:
        super().__init__(settings.merge, **kw)
        self.ts = settings



class TimeSeriesPartition(MergePartition):
    sink: TimeSeriesSink

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._ready: set[tuple[str, str]] = set()  # namespaces created or found

    def write_docs(self, docs: list[Doc]) -> None:
        ts = self.sink.ts
        field = ts.time_field
        good: list[Doc] = []
        bad: list[tuple[Doc, str]] = []
        for d in docs:
            if isinstance(d.get(field), _dt.datetime):
                good.append(d)
            else:
                bad.append((d, f"'{field}' must be present and contain a valid BSON UTC datetime value"))
        if bad:
            self._to_dlq(bad)
        super().write_docs(good)

    def _prepare(self, namespaces: list[tuple[str, str]]) -> None:
        for db, coll in namespaces:
            if (db, coll) not in self._ready:
                self._create(db, coll)

    def _create(self, db: str, coll: str) -> None:
        """Create ``db.coll`` as a time series collection once; keep an existing one."""
        ts = self.sink.ts

        def create() -> None:
            try:
                self.client[db].create_collection(coll, timeseries=ts.options)
            except CollectionInvalid:
                pass  # it exists (pymongo's check)
            except OperationFailure as exc:
                if exc.code == NAMESPACE_EXISTS:
                    return
                if exc.code != NOT_IMPLEMENTED:
                    raise
                log.warning(
                    "%s: the server has no time series collections (%s); %s.%s is a plain "
                    "collection, where a repeated _id goes to the DLQ",
                    self.sink.describe_target(), str(exc).split(", full error", 1)[0], db, coll,
                )

        self._retrying(f"create {db}.{coll}", create)
        self._ready.add((db, coll))


TimeSeriesSink.partition_cls = TimeSeriesPartition
