"""IR dataclasses of the enrichment stages (frozen, with the user's ``path``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SetStreamMetaStage:
    """``{$setStreamMeta: {"stream.<field>": <expr>}}``: fields under ``_stream_meta``."""

    path: str
    fields: tuple[tuple[tuple[str, ...], Any], ...]  # (parts below "stream.", expression spec)


@dataclass(frozen=True)
class LookupStage:
    """``$lookup`` / ``$cachedLookup`` against a MongoDB connection.

    ``connection_name`` is None for a nested ``$lookup`` (``from: "coll"``): it uses the
    enclosing lookup's connection and database.
    """

    path: str
    connection_name: str | None
    db: str | None
    coll: str
    as_field: str
    local_field: str | None = None
    foreign_field: str | None = None
    let: tuple[tuple[str, Any], ...] = ()
    pipeline: tuple[dict[str, Any], ...] | None = None  # raw stages, compiled per let-values
    parallelism: int = 1
    # $cachedLookup only
    cached: bool = False
    ttl_ms: int = 0
    max_mem_bytes: int | None = None


@dataclass(frozen=True)
class ThrottleStage:
    path: str
    messages_per_sec: float | None
    bytes_per_sec: float | None


@dataclass(frozen=True)
class HttpsStage:
    """``$https``: one HTTP request per document to an ``https`` connection."""

    path: str
    connection_name: str
    url_path: Any  # str, expression spec, or None
    method: str
    parameters: tuple[tuple[str, Any], ...]
    headers: tuple[tuple[str, Any], ...]
    payload: tuple[dict[str, Any], ...] | None
    as_field: str
    on_error: str  # dlq | ignore | fail
    connection_timeout_s: float = 30.0  # waiting for a response on an open connection
    request_timeout_s: float = 60.0  # establishing the connection
    parse_json_strings: bool = False
