"""Fixtures: a real ``mqlflow serve`` process on a free port with its own state dir."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from svc_helpers import Service, start_service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = start_service(tmp_path)
    yield svc
    svc.stop()


@pytest.fixture
def client(service: Service) -> Iterator[pymongo.MongoClient]:  # type: ignore[type-arg]
    c = service.client()
    yield c
    c.close()
