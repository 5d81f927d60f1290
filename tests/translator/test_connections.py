"""The connection registry file: validation, ${ENV} interpolation, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from translator.connections import (
    SAMPLE_CONNECTION,
    Connection,
    ConnectionRegistry,
    ConnectionsFileError,
    interpolate,
    load_registry,
    mask_uri,
)
from translator.errors import TranslateError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "conns.toml"
    p.write_text(text)
    return str(p)


def load_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConnectionsFileError) as ei:
        load_registry(path, env=env or {})
    return str(ei.value).replace(path, "F")


def test_the_example_file_defines_the_seed_connections() -> None:
    reg = load_registry(str(REPO / "connections.example.toml"), env={})
    assert reg.names() == ["MyInputComesFromHere", "MyOutputGoesHere", SAMPLE_CONNECTION]
    out = reg.get("MyOutputGoesHere", "p")
    assert (out.type, out.uri) == ("mongodb", "mongodb://127.0.0.1:27018/")
    kafka = reg.get("MyInputComesFromHere", "p")
    assert kafka.kafka_config() == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}
    assert kafka.config == {"security.protocol": "PLAINTEXT"}  # what Kafka clients pass verbatim


def test_example_file_follows_the_environment() -> None:
    env = {"MONGODB_URI": "mongodb://db.example:27017/", "KAFKA_BOOTSTRAP": "k1:9092,k2:9092"}
    reg = load_registry(str(REPO / "connections.example.toml"), env=env)
    assert reg.get("MyOutputGoesHere", "p").uri == "mongodb://db.example:27017/"
    assert reg.get("MyInputComesFromHere", "p").bootstrap_servers == "k1:9092,k2:9092"


def test_all_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, """
[connections.a]
type = "atlas"
uri = "mongodb+srv://u:${PW}@cluster0.example.net/"
[connections.k]
type = "kafka"
bootstrap_servers = ["h1:9092", "h2:9092"]
security = { "security.protocol" = "SASL_SSL", "sasl.mechanisms" = "PLAIN" }
config = { "client.id" = "x" }
[connections.web]
type = "https"
url = "https://api.example.com/v1"
headers = { Authorization = "Bearer ${TOKEN:-none}" }
[connections.solar2]
type = "sample"
""")
    reg = load_registry(path, env={"PW": "p@ss"})
    assert reg.source == path
    assert reg.get("a", "p").uri == "mongodb+srv://u:p@ss@cluster0.example.net/"
    k = reg.get("k", "p")
    assert k.bootstrap_servers == "h1:9092,h2:9092"
    assert k.kafka_config() == {
        "bootstrap.servers": "h1:9092,h2:9092", "security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", "client.id": "x",
    }
    web = reg.get("web", "p")
    assert (web.url, web.headers) == ("https://api.example.com/v1", {"Authorization": "Bearer none"})
    assert reg.get("solar2", "p").type == "sample"
    assert reg.names() == ["a", "k", SAMPLE_CONNECTION, "solar2", "web"]


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("plain", {}, "plain"),
    ("${A}", {"A": "1"}, "1"),
    ("x${A}y${B:-two}z", {"A": "1"}, "x1ytwoz"),
    ("${B:-two}", {"B": ""}, "two"),  # shell rule: empty counts as unset for :-
    ("${B:-}", {}, ""),
    ("${B:-a:b/c}", {}, "a:b/c"),
    ("$${A} and $A", {"A": "1"}, "${A} and $A"),
])
def test_interpolation(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env, "f", "k") == expected


@pytest.mark.parametrize(("text", "expected"), [
    (
        '[connections.out]\ntype = "mongodb"\nuri = "${NOPE}"\n',
        "F: connections.out.uri: environment variable NOPE is not set (write ${NOPE:-default} to give a default)",
    ),
    ('[connections.out]\ntype = "mongodb"\nuri = "${NOPE"\n', "F: connections.out.uri: malformed ${...} reference in '${NOPE'"),
    ('[connections.out]\ntype = "mongodb"\n', "F: connections.out.uri: is required"),
    ('[connections.out]\nuri = "mongodb://h/"\n', "F: connections.out.type: is required (one of atlas, mongodb, kafka, https, sample)"),
    (
        '[connections.out]\ntype = "mongo"\nuri = "mongodb://h/"\n',
        "F: connections.out.type: unknown connection type 'mongo'; expected one of atlas, mongodb, kafka, https, sample",
    ),
    ('[connections.out]\ntype = "mongodb"\nuri = "http://h/"\n', "F: connections.out.uri: must start with mongodb:// or mongodb+srv://"),
    ('[connections.out]\ntype = "mongodb"\nuri = "mongodb://h/"\nurl = "x"\n', "F: connections.out.url: unknown key"),
    ('[connections.k]\ntype = "kafka"\nbootstrap_servers = 9092\n', "F: connections.k.bootstrap_servers: input should be a valid string"),
    ('[connections.k]\ntype = "kafka"\nbootstrap_servers = []\n', "F: connections.k.bootstrap_servers: must name at least one host:port"),
    (
        '[connections.k]\ntype = "kafka"\nbootstrap_servers = "h:1"\nsecurity = { a = [1] }\n',
        "F: connections.k.security.a: input should be a valid string",
    ),
    ('[connections.w]\ntype = "https"\nurl = "ftp://x"\n', "F: connections.w.url: must start with https:// (or http://)"),
    ('[connections.w]\ntype = "https"\nurl = "https://x"\nheaders = { A = 1 }\n', "F: connections.w.headers.A: input should be a valid string"),
    ('[connection.out]\ntype = "mongodb"\n', "F: connection: unknown top-level key; expected [connections.<name>] tables"),
    ('connections = 3\n', "F: connections: must be a table of [connections.<name>] tables"),
    ('[connections]\nout = "mongodb://h/"\n', "F: connections.out: must be a table with a 'type' key"),
    (
        '[connections."my out"]\ntype = "mongodb"\nuri = "mongodb://h/"\n',
        "F: connections.my out: a connection name may use letters, digits, '_', '-' and '.'",
    ),
    (
        '[connections.sample_stream_solar]\ntype = "mongodb"\nuri = "mongodb://h/"\n',
        "F: connections.sample_stream_solar: 'sample_stream_solar' is the built-in sample connection",
    ),
    ('[connections.out\n', "F: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 17)"),
])
def test_errors_are_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    msg = load_error(tmp_path, text)
    assert msg == expected
    assert "\n" not in msg


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConnectionsFileError) as ei:
        load_registry(path, env={})
    assert str(ei.value) == f"{path}: file not found"


def test_default_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MQLFLOW_CONNECTIONS", raising=False)
    assert load_registry(None).names() == [SAMPLE_CONNECTION]  # nothing: only the sample
    (tmp_path / "connections.toml").write_text('[connections.cwd]\ntype = "mongodb"\nuri = "mongodb://cwd/"\n')
    assert load_registry(None).names() == ["cwd", SAMPLE_CONNECTION]
    other = tmp_path / "other.toml"
    other.write_text('[connections.env]\ntype = "mongodb"\nuri = "mongodb://env/"\n')
    monkeypatch.setenv("MQLFLOW_CONNECTIONS", str(other))
    assert load_registry(None).names() == ["env", SAMPLE_CONNECTION]
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('[connections.flag]\ntype = "mongodb"\nuri = "mongodb://flag/"\n')
    assert load_registry(str(explicit)).names() == ["flag", SAMPLE_CONNECTION]


def test_unknown_connection_lists_the_known_names() -> None:
    reg = ConnectionRegistry({"MyOutputGoesHere": Connection(name="MyOutputGoesHere", type="mongodb", uri="mongodb://h/")})
    with pytest.raises(TranslateError) as ei:
        reg.get("MyOutputGoesHer", "pipeline[4].$merge.into.connectionName")
    assert str(ei.value) == (
        "pipeline[4].$merge.into.connectionName: unknown connection 'MyOutputGoesHer'; "
        "did you mean 'MyOutputGoesHere'?; known connections: MyOutputGoesHere, sample_stream_solar"
    )
    assert reg.get(SAMPLE_CONNECTION, "p").type == "sample"


@pytest.mark.parametrize(("uri", "masked"), [
    ("mongodb://alice:s3cret@h:27017/db?x=1", "mongodb://alice:***@h:27017/db?x=1"),
    ("mongodb+srv://bob@cluster.example.net/", "mongodb+srv://bob:***@cluster.example.net/"),
    ("mongodb://h1:1,h2:2/", "mongodb://h1:1,h2:2/"),
])
def test_mask_uri(uri: str, masked: str) -> None:
    assert mask_uri(uri) == masked


def test_a_dlq_on_a_kafka_connection_fails_at_compile_time() -> None:
    """The DLQ is a MongoDB collection: a Kafka connection is refused before anything runs."""
    from translator.compile import compile_pipeline
    from translator.loader import options_from_mapping

    reg = ConnectionRegistry({"k": Connection(name="k", type="kafka", bootstrap_servers="127.0.0.1:9")})
    opts = options_from_mapping({"dlq": {"connectionName": "k", "db": "d", "coll": "c"}}, name="p")
    with pytest.raises(TranslateError) as ei:
        compile_pipeline([{"$source": {"documents": [{"a": 1}]}}], reg, opts)
    assert str(ei.value) == (
        "options.dlq.connectionName: connection 'k' is of type 'kafka'; "
        "a MongoDB connection (type 'atlas' or 'mongodb') is needed"
    )
