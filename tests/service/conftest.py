"""Fixtures: a real ``mqlflow serve`` process on a free port with its own state dir."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from svc_helpers import MONGOSH_KEYS, Service, start_service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = start_service(tmp_path)
    yield svc
    svc.stop()


@pytest.fixture(params=sorted(MONGOSH_KEYS))
def mongosh_version(request: pytest.FixtureRequest) -> str:
    """Each end-to-end mongosh test runs on the pinned old and the newest mongosh 2.x."""
    return str(request.param)


@pytest.fixture
def client(service: Service) -> Iterator[pymongo.MongoClient]:  # type: ignore[type-arg]
    c = service.client()
    yield c
    c.close()
