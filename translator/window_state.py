"""Typed state of the window operators, and their versioned snapshots.

Partials, sessions, pane keys and the messages between the ingest and close steps are
named types here so that each field is read by name, not position. Snapshots carry a
version: a resume from an older version converts it or fails with a message naming the
version, never misreads it. docs/windows.md describes the layouts and the versions.

Snapshots are pickled, and pickle stores classes by import path: the classes below must
stay importable under ``translator.window_state`` with these names.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, NamedTuple

# A group's partial result: ``[group id, *accumulator states]``. It stays a list because
# the folds (and the fast path) update states in place with slice assignment.
GroupEntry = list[Any]
GroupTable = dict[Any, GroupEntry]  # hashable group key -> entry
# A window's (or pane's) partial: a group table, or without $group the window's documents.
Table = GroupTable | list[dict[str, Any]]
# Ingest output, per close-step bucket: ``{bucket: {key: Table | list[Session]}}``. The key
# is a window start (tumbling, hopping per window), a PaneRef (hopping by panes) or a
# session's partition key (sessions).
Partials = dict[int, dict[Any, Any]]

QUIET, ACTIVE, IDLE = 0, 1, 2  # WindowMsg.activity: no documents, documents, partition idle


class PaneKey(NamedTuple):
    """A pane whose documents count only in windows starting at or after ``first``: they
    were late for the earlier windows holding the pane. A plain ``int`` pane start
    (the usual key) counts in every window containing the pane."""

    start: int
    first: int


PaneRef = int | PaneKey


class SessionDoc(NamedTuple):
    """The key of a session window's kept documents (:attr:`WindowMsg.late`): the
    documents of ``partition`` (the hashable ``partitionBy`` value) at event time ``t``.
    A session partial (:class:`Session`) of that partition holds them when
    ``start <= t <= last``; its own documents are under ``SessionDoc(partition, start)``."""

    partition: Any
    t: int


# The key, in bucket 0 of :attr:`WindowMsg.late`, of the DLQ entries a stage inside the
# window raised for kept documents: ``[{"key": fold key, "reason": ..., "doc": ...}]``. The
# close step sends them unless every window of their key had closed (then their documents
# are late, and a late document gets only its late entry, as at ingest).
ERRORS = "$errors"


@dataclass(slots=True)
class Session:
    """One session of a partition: ``start``/``last`` are its first and last event times
    (its window ends at ``last + gap``); ``payload`` its partial."""

    start: int
    last: int
    partition: Any
    payload: Any  # Table


class WindowMsg(NamedTuple):
    """What a source partition sends to each close-step bucket.

    ``late``: after the partition was idle, the documents behind ``partials``,
    ``{key: [document, ...]}`` for every key of ``partials`` (and keys whose documents a
    stage inside the window dropped): the close step sends each to the DLQ when its window
    already closed, one entry per document as a late document at ingest, and drops them
    otherwise (docs/windows.md, "Late data after an idle partition"). Bucket 0's may
    hold :data:`ERRORS` too, the errors of the window's stages for those documents."""

    partition: str
    watermark: int  # the partition's watermark, in ms
    partials: dict[Any, Any] | None  # this bucket's share of ``Partials``
    activity: int  # QUIET, ACTIVE or IDLE
    late: dict[Any, list[dict[str, Any]]] | None = None


@dataclass(slots=True)
class CloseState:
    """A close-step bucket's state (:class:`translator.windows.CloseLogic`)."""

    wms: dict[str, int]  # each partition's watermark
    windows: dict[Any, Any]  # open windows {start: Table}, or stored panes {PaneRef: Table}
    sessions: dict[Any, list[Session]]  # per partition key, in start order
    last_activity: float  # ms; for idleTimeout
    idle: set[str]  # partitions that declared themselves idle
    closed_upto: int  # start of the last closed window


# ---- snapshots ---------------------------------------------------------------------------

# Version 1 is the unversioned tuple ``(wms, windows, sessions, last_activity, idle,
# closed_upto)`` with sessions as ``[start, last, partition, payload]`` lists; hopping
# windows stored whole windows before they were folded by pane, and panes after, in the
# same tuple. Version 2 is :class:`CloseSnapshot`.
CLOSE_VERSION = 2
# Version 1 held partials are a pickled ``Partials`` dict; version 2 :class:`HeldPartials`.
HELD_VERSION = 2


RESTART = "start the processor without its checkpoint (start({resumeFromCheckpoint: false}))"


class SnapshotError(RuntimeError):
    """A snapshot this code cannot read safely."""


class CloseSnapshot(NamedTuple):
    """The close step's snapshot. Field order extends version 1's tuple (so ``[1]`` is
    still the windows); ``layout`` names the window kind that wrote it."""

    wms: dict[str, int]
    windows: dict[Any, Any]
    sessions: dict[Any, list[Session]]
    last_activity: float
    idle: set[str]
    closed_upto: int
    version: int = CLOSE_VERSION
    layout: str = ""


def dump_close(state: CloseState, layout: str) -> bytes:
    """Pickle now: the runtime may serialise the snapshot after the state changed."""
    snap = CloseSnapshot(state.wms, state.windows, state.sessions, state.last_activity, state.idle, state.closed_upto,
                         CLOSE_VERSION, layout)
    return pickle.dumps(snap, protocol=5)


def load_close(data: bytes, layout: str, path: str) -> tuple[CloseState, int]:
    """The state in a close snapshot and the version it was written in. Version 1 is
    converted except where only the window kind can tell (the caller's
    ``WindowKind.resume``); a newer version or another layout fails."""
    snap = pickle.loads(data)
    if isinstance(snap, CloseSnapshot):
        if snap.version != CLOSE_VERSION:
            raise _unknown_version(f"{path}: window state", snap.version, CLOSE_VERSION)
        if snap.layout != layout:
            raise SnapshotError(
                f"{path}: window state snapshot (version {snap.version}) holds {snap.layout!r} windows, "
                f"this pipeline has {layout!r}; {RESTART}"
            )
        state = CloseState(snap.wms, snap.windows, snap.sessions, snap.last_activity, snap.idle, snap.closed_upto)
        return state, snap.version
    if type(snap) is tuple and len(snap) == 6:
        wms, windows, sessions, last_activity, idle, closed_upto = snap
        sessions = {hk: [Session(*s) for s in lst] for hk, lst in sessions.items()}
        windows = {PaneKey(*k) if type(k) is tuple else k: v for k, v in windows.items()}
        return CloseState(wms, windows, sessions, last_activity, idle, closed_upto), 1
    raise SnapshotError(
        f"{path}: window state snapshot of unknown format ({type(snap).__name__}); {RESTART}"
    )


@dataclass(slots=True)
class HeldPartials:
    """Partials a source partition held when its snapshot was taken, and (after the
    partition was idle) the documents behind them, ``{bucket: {key: [document, ...]}}``
    (:attr:`WindowMsg.late`). ``late`` is optional within version 2: a snapshot written
    before it existed reads as None (its partials are then late as partial results)."""

    partials: Partials
    version: int = HELD_VERSION
    late: Partials | None = None


class IngestSnapshot(NamedTuple):
    """A source partition's snapshot: the source's own position, the partition watermark,
    the held partials (pickled :class:`HeldPartials`, or None), whether the partition
    has declared itself idle since the processor started (it then holds partials for
    ``HOLD_MS`` only, see translator/runtime.py) and how many more documents it keeps
    beside its partials for the close step's late check (``IngestLogic.keep_docs``).
    Snapshots written before a field existed read as False and 0."""

    inner: Any
    watermark: int
    held: bytes | None
    after_idle: bool = False
    keep_docs: int = 0


def dump_held(partials: Partials, late: Partials | None = None) -> bytes:
    return pickle.dumps(HeldPartials(partials, HELD_VERSION, late or None), protocol=5)


def load_ingest(state: tuple[Any, ...]) -> tuple[Any, int | None, Partials | None]:
    """``(inner, watermark, held partials)`` of an ingest snapshot of any version:
    ``(inner, wm)`` from before partials were held, ``(inner, wm, pickled dict)``
    (version 1 held partials) or an :class:`IngestSnapshot`."""
    return load_ingest_late(state)[:3]


def load_ingest_late(state: tuple[Any, ...]) -> tuple[Any, int | None, Partials | None, Partials | None]:
    """:func:`load_ingest` and the held documents (:attr:`HeldPartials.late`, None when
    the snapshot has none)."""
    if len(state) == 2:
        return state[0], state[1], None, None
    inner, wm, held = state[:3]
    if not held:
        return inner, wm, None, None
    got = pickle.loads(held)
    if isinstance(got, HeldPartials):
        if got.version != HELD_VERSION:
            raise _unknown_version("held window partials", got.version, HELD_VERSION)
        return inner, wm, got.partials, getattr(got, "late", None)
    if isinstance(got, dict):  # version 1: the same dict, pane keys as plain tuples
        return inner, wm, {b: {PaneKey(*k) if type(k) is tuple else k: t for k, t in keyed.items()}
                           for b, keyed in got.items()}, None
    raise SnapshotError(f"held window partials of unknown format ({type(got).__name__}) in a source snapshot; {RESTART}")


def _unknown_version(what: str, version: int, current: int) -> SnapshotError:
    """A snapshot from a newer mqlflow (or damaged): never guess at its layout."""
    return SnapshotError(
        f"{what} snapshot version {version} is not one this mqlflow reads (it reads versions 1 to {current}); {RESTART}"
    )
