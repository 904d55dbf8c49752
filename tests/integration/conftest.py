"""Every test here starts from an empty database, whatever the tests before it left
(apps, credentials sealed with another test's key, queued items)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _empty_database(redis: Any) -> None:
    """Requesting the session's `redis` fixture empties the database before the test."""
