"""The connection registry: named connections that `$source`, `$merge`, `$emit` and the
DLQ refer to by ``connectionName`` (ASP's Connection Registry).

``sample_stream_solar`` (kind ``sample``) always exists. Other connections come from a
TOML file (default ``connections.toml``; ``MQLFLOW_CONNECTIONS`` or a flag overrides).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from translator.errors import TranslateError, did_you_mean

ConnectionKind = Literal["sample", "atlas", "mongodb", "kafka", "https"]
SAMPLE_CONNECTION = "sample_stream_solar"


class Connection(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    type: ConnectionKind
    uri: str | None = None  # atlas / mongodb
    bootstrap_servers: str | None = None  # kafka
    url: str | None = None  # https


class ConnectionRegistry:
    """Looks connections up by name; unknown names fail at compile time with the known list."""

    def __init__(self, connections: dict[str, Connection] | None = None) -> None:
        self._by_name: dict[str, Connection] = {
            SAMPLE_CONNECTION: Connection(name=SAMPLE_CONNECTION, type="sample")
        }
        if connections:
            self._by_name.update(connections)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def all(self) -> list[Connection]:
        return [self._by_name[n] for n in self.names()]

    def get(self, name: Any, path: str) -> Connection:
        if not isinstance(name, str):
            raise TranslateError(path, f"connectionName must be a string, got {type(name).__name__}")
        conn = self._by_name.get(name)
        if conn is None:
            raise TranslateError(
                path,
                f"unknown connection '{name}'{did_you_mean(name, self._by_name)}; "
                f"known connections: {', '.join(self.names())}",
            )
        return conn

    def __contains__(self, name: object) -> bool:
        return name in self._by_name
