"""Fixtures of the enrichment-stage tests: a fresh database on the shared FerretDB, and a
private FerretDB for the tests that stop their server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.svc_helpers import PrivateFerretDB, private_ferretdb


@pytest.fixture
def db(mongo_db: Any) -> Any:
    """A fresh, uniquely named database, dropped afterwards (``mongo_db`` of tests/conftest.py)."""
    return mongo_db


@pytest.fixture
def own_ferretdb(tmp_path: Path) -> Iterator[PrivateFerretDB]:
    """A FerretDB of scripts/services.sh on a free port of its own: the test may stop it."""
    with private_ferretdb(tmp_path) as f:
        yield f
