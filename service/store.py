"""SQLite store of stream processors: definition, state, timestamps, error message.

ASP keeps a processor's definition and state across restarts of the service
(docs/semantics.md#lifecycle); we keep them in ``<state-dir>/processors.db``.
Pipelines and options are stored as BSON blobs so that BSON types stay exact
(an ``int`` stays an ``int``, a date stays a date; see docs/semantics.md#types).
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import bson
from bson import ObjectId

from service.wire import CODEC_OPTIONS

State = Literal["CREATED", "STARTED", "STOPPED", "FAILED"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS processors (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    pipeline BLOB NOT NULL,
    options BLOB NOT NULL,
    state TEXT NOT NULL,
    error_msg TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    last_modified REAL NOT NULL,
    last_state_change REAL NOT NULL
)
"""


def utcnow() -> _dt.datetime:
    """Millisecond precision, like a BSON date."""
    now = _dt.datetime.now(_dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class ProcessorRecord:
    name: str
    id: str
    pipeline: list[dict[str, Any]]
    options: dict[str, Any]
    state: State
    error_msg: str
    created_at: _dt.datetime
    last_modified: _dt.datetime
    last_state_change: _dt.datetime

    def to_list_entry(self) -> dict[str, Any]:
        """The shape ``listStreamProcessors`` returns (docs/semantics.md#commands)."""
        return {
            "id": self.id,
            "name": self.name,
            "pipeline": self.pipeline,
            "state": self.state,
            "errorMsg": self.error_msg,
            "lastModified": _naive(self.last_modified),
            "lastStateChange": _naive(self.last_state_change),
            "options": self.options,
        }


def _naive(d: _dt.datetime) -> _dt.datetime:
    return d.astimezone(_dt.UTC).replace(tzinfo=None)


def _enc(value: Any) -> bytes:
    return bson.encode({"v": value}, codec_options=CODEC_OPTIONS)


def _dec(blob: bytes) -> Any:
    return bson.decode(blob, CODEC_OPTIONS)["v"]


def _ts(d: _dt.datetime) -> float:
    return d.timestamp()


def _from_ts(t: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(t, _dt.UTC)


class ProcessorStore:
    """Thread-safe, synchronous; every call is one short transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _row(self, row: tuple[Any, ...]) -> ProcessorRecord:
        return ProcessorRecord(
            name=row[0],
            id=row[1],
            pipeline=_dec(row[2]),
            options=_dec(row[3]),
            state=row[4],
            error_msg=row[5],
            created_at=_from_ts(row[6]),
            last_modified=_from_ts(row[7]),
            last_state_change=_from_ts(row[8]),
        )

    def get(self, name: str) -> ProcessorRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, id, pipeline, options, state, error_msg, created_at, "
                "last_modified, last_state_change FROM processors WHERE name = ?",
                (name,),
            ).fetchone()
        return self._row(row) if row else None

    def all(self) -> list[ProcessorRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, id, pipeline, options, state, error_msg, created_at, "
                "last_modified, last_state_change FROM processors ORDER BY created_at, name"
            ).fetchall()
        return [self._row(r) for r in rows]

    def create(
        self, name: str, pipeline: list[dict[str, Any]], options: dict[str, Any]
    ) -> ProcessorRecord | None:
        """Insert a CREATED processor; ``None`` when the name is taken."""
        now = utcnow()
        rec = ProcessorRecord(
            name, str(ObjectId()), pipeline, options, "CREATED", "", now, now, now
        )
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO processors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rec.name,
                        rec.id,
                        _enc(pipeline),
                        _enc(options),
                        rec.state,
                        rec.error_msg,
                        _ts(now),
                        _ts(now),
                        _ts(now),
                    ),
                )
            except sqlite3.IntegrityError:
                return None
        return rec

    def set_state(self, name: str, state: State, error_msg: str = "") -> ProcessorRecord | None:
        now = utcnow()
        with self._lock:
            cur = self._db.execute(
                "UPDATE processors SET state = ?, error_msg = ?, last_state_change = ? "
                "WHERE name = ?",
                (state, error_msg, _ts(now), name),
            )
        if cur.rowcount == 0:
            return None
        return self.get(name)

    def update_definition(
        self, name: str, pipeline: list[dict[str, Any]], options: dict[str, Any]
    ) -> ProcessorRecord | None:
        now = utcnow()
        with self._lock:
            cur = self._db.execute(
                "UPDATE processors SET pipeline = ?, options = ?, last_modified = ? WHERE name = ?",
                (_enc(pipeline), _enc(options), _ts(now), name),
            )
        if cur.rowcount == 0:
            return None
        return self.get(name)

    def delete(self, name: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM processors WHERE name = ?", (name,))
        return cur.rowcount > 0


__all__ = ["ProcessorRecord", "ProcessorStore", "State", "utcnow"]
