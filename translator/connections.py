"""The connection registry: named connections that `$source`, `$merge`, `$emit` and the
DLQ refer to by ``connectionName`` (ASP's Connection Registry).

``sample_stream_solar`` (kind ``sample``) always exists. Other connections come from a
TOML file (default ``connections.toml``; ``MQLFLOW_CONNECTIONS`` or a flag overrides)::

    [connections.MyOutputGoesHere]
    type = "mongodb"
    uri = "${MONGODB_URI:-mongodb://127.0.0.1:27018/}"

    [connections.MyInputComesFromHere]
    type = "kafka"
    bootstrap_servers = "${KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
    [connections.MyInputComesFromHere.security]   # librdkafka names, passed verbatim
    "security.protocol" = "PLAINTEXT"

Every string value may use ``${VAR}`` (must be set) or ``${VAR:-default}`` (default when
VAR is unset or empty, as in the shell); ``$${`` writes a literal ``${``. A bad file fails
with one line naming the file and the key, never a validation dump.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from translator.errors import TranslateError, did_you_mean

ConnectionKind = Literal["sample", "atlas", "mongodb", "kafka", "https"]
SAMPLE_CONNECTION = "sample_stream_solar"
CONNECTIONS_ENV = "MQLFLOW_CONNECTIONS"
DEFAULT_CONNECTIONS_FILE = "connections.toml"
MONGODB_KINDS = frozenset({"atlas", "mongodb"})


class Connection(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    type: ConnectionKind
    uri: str | None = None  # atlas / mongodb
    bootstrap_servers: str | None = None  # kafka
    url: str | None = None  # https
    # kafka: librdkafka security settings ("security.protocol", "sasl.mechanisms", ...);
    # the loader also copies them into ``config`` so Kafka clients pick them up verbatim.
    security: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)  # kafka: other librdkafka settings
    headers: dict[str, str] = Field(default_factory=dict)  # https

    def kafka_config(self) -> dict[str, Any]:
        """The librdkafka configuration of a ``kafka`` connection."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.security, **self.config}

    def masked_uri(self) -> str:
        """``uri`` with its password hidden, for messages and logs."""
        return mask_uri(self.uri or "")


class ConnectionRegistry:
    """Looks connections up by name; unknown names fail at compile time with the known list."""

    def __init__(self, connections: dict[str, Connection] | None = None, source: str | None = None) -> None:
        self._by_name: dict[str, Connection] = {
            SAMPLE_CONNECTION: Connection(name=SAMPLE_CONNECTION, type="sample")
        }
        if connections:
            self._by_name.update(connections)
        self.source = source  # the file the connections came from, for messages

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

    def get_mongodb(self, name: Any, path: str) -> Connection:
        """A connection that must be of kind ``atlas``/``mongodb`` (``$merge``, DLQ)."""
        conn = self.get(name, path)
        if conn.type not in MONGODB_KINDS:
            raise TranslateError(
                path, f"connection '{conn.name}' is of type '{conn.type}'; a MongoDB connection (type 'atlas' or 'mongodb') is needed"
            )
        return conn

    def __contains__(self, name: object) -> bool:
        return name in self._by_name


# ---- masking -------------------------------------------------------------------------------

_CRED_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/]*)(?::[^@/]*)?@")


def mask_uri(uri: str) -> str:
    """``mongodb://user:secret@host/`` -> ``mongodb://user:***@host/`` (no credential leaks)."""
    return _CRED_RE.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", uri, count=1)


# ---- loading -------------------------------------------------------------------------------


class ConnectionsFileError(ValueError):
    """A connections file that cannot be used; ``str()`` is one line naming file and key."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _MongoSpec(_Strict):
    type: Literal["atlas", "mongodb"]
    uri: str

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not v.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return v


class _KafkaSpec(_Strict):
    type: Literal["kafka"]
    bootstrap_servers: str | list[str]
    security: dict[str, str | int | float | bool] = Field(default_factory=dict)
    config: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str | list[str]) -> str | list[str]:
        if not (v if isinstance(v, str) else [s for s in v if s.strip()]):
            raise ValueError("must name at least one host:port")
        return v


class _HttpsSpec(_Strict):
    type: Literal["https"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http://)")
        return v


class _SampleSpec(_Strict):
    type: Literal["sample"]


_SPECS: dict[str, type[_Strict]] = {
    "atlas": _MongoSpec,
    "mongodb": _MongoSpec,
    "kafka": _KafkaSpec,
    "https": _HttpsSpec,
    "sample": _SampleSpec,
}

_VAR_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def interpolate(text: str, env: dict[str, str] | os._Environ[str], file: str, key: str) -> str:
    """Expand ``${VAR}`` / ``${VAR:-default}`` (shell rules); ``$${`` is a literal ``${``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        var, default = m.group(1), m.group(2)
        value = env.get(var)
        if default is not None:
            return value if value else default
        if value is None:
            raise ConnectionsFileError(
                file, key, f"environment variable {var} is not set (write ${{{var}:-default}} to give a default)"
            )
        return value

    if "${" in _VAR_RE.sub("", text):
        raise ConnectionsFileError(file, key, f"malformed ${{...}} reference in {text!r}")
    return _VAR_RE.sub(sub, text)


def _interpolate_tree(value: Any, env: dict[str, str] | os._Environ[str], file: str, key: str) -> Any:
    if isinstance(value, str):
        return interpolate(value, env, file, key)
    if isinstance(value, dict):
        return {k: _interpolate_tree(v, env, file, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate_tree(v, env, file, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def _first_error(exc: ValidationError, key: str, data: Any) -> tuple[str, str]:
    err = exc.errors()[0]
    full = key
    cur = data
    for part in err["loc"]:
        # Keep the parts that walk the user's data; drop pydantic's union tags ("str"...).
        if isinstance(cur, dict):
            full += f".{part}"
            cur = cur.get(part)
        elif isinstance(cur, list) and isinstance(part, int):
            full += f"[{part}]"
            cur = cur[part] if part < len(cur) else None
    kind = err["type"]
    if kind == "missing":
        return full, "is required"
    if kind == "extra_forbidden":
        return full, "unknown key"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return full, msg[0].lower() + msg[1:] if msg else msg


def parse_connections(
    data: dict[str, Any], file: str, env: dict[str, str] | os._Environ[str] | None = None
) -> dict[str, Connection]:
    """Validate a parsed TOML document into connections (errors: :class:`ConnectionsFileError`)."""
    env = os.environ if env is None else env
    unknown = sorted(set(data) - {"connections"})
    if unknown:
        raise ConnectionsFileError(file, unknown[0], "unknown top-level key; expected [connections.<name>] tables")
    table = data.get("connections", {})
    if not isinstance(table, dict):
        raise ConnectionsFileError(file, "connections", "must be a table of [connections.<name>] tables")
    out: dict[str, Connection] = {}
    for name, raw in table.items():
        key = f"connections.{name}"
        if not _NAME_RE.match(name):
            raise ConnectionsFileError(file, key, "a connection name may use letters, digits, '_', '-' and '.'")
        if not isinstance(raw, dict):
            raise ConnectionsFileError(file, key, "must be a table with a 'type' key")
        kind = raw.get("type")
        if kind is None:
            raise ConnectionsFileError(file, f"{key}.type", f"is required (one of {', '.join(_SPECS)})")
        spec_cls = _SPECS.get(kind) if isinstance(kind, str) else None
        if spec_cls is None:
            raise ConnectionsFileError(
                file, f"{key}.type", f"unknown connection type {kind!r}; expected one of {', '.join(_SPECS)}"
            )
        if name == SAMPLE_CONNECTION and kind != "sample":
            raise ConnectionsFileError(file, key, f"'{SAMPLE_CONNECTION}' is the built-in sample connection")
        values = _interpolate_tree(raw, env, file, key)
        try:
            spec = spec_cls.model_validate(values)
        except ValidationError as exc:
            k, msg = _first_error(exc, key, values)
            raise ConnectionsFileError(file, k, msg) from None
        fields = spec.model_dump()
        if isinstance(spec, _KafkaSpec):
            servers = fields["bootstrap_servers"]
            if isinstance(servers, list):
                fields["bootstrap_servers"] = ",".join(s.strip() for s in servers if s.strip())
            fields["config"] = {**fields["security"], **fields["config"]}
        out[name] = Connection(name=name, **fields)
    return out


def load_connections_file(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> dict[str, Connection]:
    """Read and validate one connections TOML file."""
    file = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConnectionsFileError(file, "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConnectionsFileError(file, "", f"invalid TOML: {exc}") from None
    return parse_connections(data, file, env)


def load_registry(path: str | None = None, env: dict[str, str] | None = None) -> ConnectionRegistry:
    """The registry for ``path``; else ``$MQLFLOW_CONNECTIONS``; else ``./connections.toml``
    when present; else only the built-in sample connection."""
    environ = os.environ if env is None else env
    chosen = path or environ.get(CONNECTIONS_ENV) or None
    if chosen is None and Path(DEFAULT_CONNECTIONS_FILE).is_file():
        chosen = DEFAULT_CONNECTIONS_FILE
    if chosen is None:
        return ConnectionRegistry()
    return ConnectionRegistry(load_connections_file(chosen, env), source=str(chosen))
