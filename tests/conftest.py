"""Service fixtures: the MongoDB-wire server and the Kafka broker of scripts/services.sh.

Endpoints come from the environment (``MONGODB_URI``, ``KAFKA_BOOTSTRAP``) or from
``.cache/run/services.env`` written by ``scripts/services.sh up``. A test that needs a
server that does not answer FAILS with how to start it: a silent skip would hide that
nothing was tested. Tests marked ``mongodb`` / ``kafka`` get the check automatically.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVICES_ENV = REPO / ".cache" / "run" / "services.env"
SERVICES_SH = REPO / "scripts" / "services.sh"


def services_env() -> dict[str, str]:
    """``KEY=VALUE`` lines of .cache/run/services.env (empty when the file is absent)."""
    out: dict[str, str] = {}
    if SERVICES_ENV.is_file():
        for line in SERVICES_ENV.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                out[key.strip()] = value.strip()
    return out


def service_endpoint(key: str) -> str | None:
    return os.environ.get(key) or services_env().get(key)


def _mongo_ping(uri: str) -> str | None:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=3000, connectTimeoutMS=3000)
    try:
        client.admin.command("ping")
        return None
    except PyMongoError as exc:
        return f"{type(exc).__name__}"
    finally:
        client.close()


def _kafka_ping(bootstrap: str) -> str | None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        md = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000}).list_topics(timeout=5)
    except KafkaException as exc:
        return str(exc)
    return None if md.brokers else "no brokers in metadata"


@pytest.fixture(scope="session")
def mongodb_uri() -> str:
    """The URI of a MongoDB-wire server that answers ping (FerretDB or MONGODB_URI)."""
    uri = service_endpoint("MONGODB_URI")
    if not uri:
        pytest.fail(
            "MongoDB is not configured (no MONGODB_URI and no .cache/run/services.env); "
            "start it with scripts/services.sh up mongodb",
            pytrace=False,
        )
    problem = _mongo_ping(uri)
    if problem:
        pytest.fail(
            f"MongoDB is not reachable at {uri} ({problem}); start it with scripts/services.sh up mongodb",
            pytrace=False,
        )
    os.environ.setdefault("MONGODB_URI", uri)  # for ${MONGODB_URI} in connection files
    return uri


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """``host:port`` of a Kafka broker that answers metadata requests."""
    bootstrap = service_endpoint("KAFKA_BOOTSTRAP")
    if not bootstrap:
        pytest.fail(
            "Kafka is not configured (no KAFKA_BOOTSTRAP and no .cache/run/services.env); "
            "start it with scripts/services.sh up kafka",
            pytrace=False,
        )
    problem = _kafka_ping(bootstrap)
    if problem:
        pytest.fail(
            f"Kafka is not reachable at {bootstrap} ({problem}); start it with scripts/services.sh up kafka",
            pytrace=False,
        )
    os.environ.setdefault("KAFKA_BOOTSTRAP", bootstrap)
    return bootstrap


@pytest.fixture
def mongo_db(mongodb_uri: str) -> Iterator[Any]:
    """A fresh, uniquely named database (``pymongo.database.Database``), dropped afterwards."""
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        try:
            client.drop_database(name)
        finally:
            client.close()


_MARKER_FIXTURES = {"mongodb": "mongodb_uri", "kafka": "kafka_bootstrap"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``mongodb``/``kafka`` checks its server even if it names no fixture."""
    for item in items:
        for marker, fixture in _MARKER_FIXTURES.items():
            if item.get_closest_marker(marker) is not None:
                names = getattr(item, "fixturenames", None)
                if names is not None and fixture not in names:
                    names.insert(0, fixture)
