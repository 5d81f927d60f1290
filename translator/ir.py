"""The typed intermediate representation of an Atlas stream pipeline: one frozen
dataclass per stage, produced once by :mod:`translator.parse`.

Expression and query specs are kept as the user wrote them (BSON values); they are
compiled into closures by the runtime builders, which also validates them at
create time. Every stage carries ``path`` (``pipeline[2].$merge``) so later errors
can still point at the user's text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

WindowKind = Literal["tumbling", "hopping", "session"]


@dataclass(frozen=True)
class SourceStage:
    path: str
    connection_name: str | None
    documents: tuple[Any, ...] | None
    time_field: Any | None  # an expression spec ($dateFromString / $toDate ...)
    ts_field_name: str = "_ts"
    topic: tuple[str, ...] = ()
    partition_idle_timeout_ms: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    # change-stream sources
    db: str | None = None
    coll: tuple[str, ...] = ()
    initial_sync: Any = None  # {enable, parallelism}, checked by sources.changestream
    read_preference: Any = None
    read_preference_tags: Any = None


@dataclass(frozen=True)
class ValidateStage:
    path: str
    validator: dict[str, Any]
    action: Literal["discard", "dlq"] = "discard"


@dataclass(frozen=True)
class MatchStage:
    path: str
    query: dict[str, Any]


@dataclass(frozen=True)
class ProjectStage:
    path: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class AddFieldsStage:
    path: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class UnsetStage:
    path: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class ReplaceRootStage:
    path: str
    new_root: Any


@dataclass(frozen=True)
class UnwindStage:
    path: str
    field_path: str  # without the leading '$'
    include_array_index: str | None = None
    preserve_null_and_empty: bool = False


@dataclass(frozen=True)
class RedactStage:
    path: str
    expr: Any


@dataclass(frozen=True)
class Accumulation:
    field: str
    op: str  # "$sum", "$topN", ...
    arg: Any


@dataclass(frozen=True)
class GroupStage:
    path: str
    id: Any
    accumulations: tuple[Accumulation, ...]


@dataclass(frozen=True)
class SortStage:
    path: str
    keys: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class LimitStage:
    path: str
    n: int


@dataclass(frozen=True)
class CountStage:
    path: str
    field: str


@dataclass(frozen=True)
class WindowStage:
    path: str
    kind: WindowKind
    pipeline: tuple[Stage, ...]
    interval_ms: int = 0  # tumbling / hopping
    hop_ms: int = 0  # hopping
    offset_ms: int = 0
    allowed_lateness_ms: int = 3000  # ASP default: 3 seconds
    idle_timeout_ms: int | None = None
    boundary: Literal["eventTime", "processingTime"] = "eventTime"
    partition_by: Any = None  # session
    gap_ms: int = 0  # session


@dataclass(frozen=True)
class ModeExpr:
    """A ``$merge`` whenMatched/whenNotMatched given as an expression, evaluated per
    document to one of the mode names (ASP's $merge,
    https://www.mongodb.com/docs/atlas/atlas-stream-processing/sp-agg-merge/)."""

    spec: Any


@dataclass(frozen=True)
class MergeStage:
    path: str
    connection_name: str
    db: Any  # str or expression spec
    coll: Any  # str or expression spec
    on: tuple[str, ...] = ("_id",)
    when_matched: str | tuple[dict[str, Any], ...] | ModeExpr = "merge"
    when_not_matched: Literal["insert", "discard"] | ModeExpr = "insert"
    parallelism: int = 1
    # ``let`` variables of the whenMatched pipeline, evaluated on the incoming document;
    # None: the default ``{new: "$$ROOT"}``.
    let: tuple[tuple[str, Any], ...] | None = None


@dataclass(frozen=True)
class EmitStage:
    path: str
    connection_name: str
    topic: Any  # str or expression spec
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EmitTimeSeriesStage:
    """``$emit`` to a MongoDB time series collection (ASP's second ``$emit`` form,
    https://www.mongodb.com/docs/atlas/atlas-stream-processing/sp-agg-emit/)."""

    path: str
    connection_name: str
    db: Any  # str or expression spec
    coll: Any  # str or expression spec
    time_field: str
    # The collection's ``timeseries`` options as given (timeField, metaField, granularity...).
    options: tuple[tuple[str, Any], ...] = ()


Stage = (
    ValidateStage
    | MatchStage
    | ProjectStage
    | AddFieldsStage
    | UnsetStage
    | ReplaceRootStage
    | UnwindStage
    | RedactStage
    | GroupStage
    | SortStage
    | LimitStage
    | CountStage
    | WindowStage
)
SinkStage = MergeStage | EmitStage | EmitTimeSeriesStage


@dataclass(frozen=True)
class DlqTarget:
    """Processor option ``dlq: {connectionName, db, coll, mode}`` (docs/semantics.md#dlq).

    ``mode`` is mqlflow's: ``"durable"`` or ``"best-effort"``; None takes the process
    default (``MQLFLOW_DLQ_MODE``, itself ``"durable"`` by default)."""

    connection_name: str
    db: str
    coll: str
    mode: str | None = None


@dataclass(frozen=True)
class Pipeline:
    """A whole validated pipeline: source, the stages between, and an optional sink."""

    source: SourceStage
    stages: tuple[Stage, ...]
    sink: SinkStage | None
    raw: tuple[dict[str, Any], ...] = ()

    @property
    def window(self) -> WindowStage | None:
        for s in self.stages:
            if isinstance(s, WindowStage):
                return s
        return None
