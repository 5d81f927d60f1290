"""Helpers of the enrichment-stage tests."""

from __future__ import annotations

from translator.connections import Connection, ConnectionRegistry


def make_registry(uri: str) -> ConnectionRegistry:
    """``meta``: the MongoDB at ``uri``; ``kafka1``: a Kafka entry (never contacted)."""
    return ConnectionRegistry({
        "meta": Connection(name="meta", type="mongodb", uri=uri),
        "kafka1": Connection(name="kafka1", type="kafka", bootstrap_servers="127.0.0.1:9"),
    })
