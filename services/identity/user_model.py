"""What a user is in the domain, independent of protobuf and Redis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class User:
    external_id: str
    email: str = ""
    phone: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    time_zone: str = ""
    locale: str = ""
    create_us: int = 0
    update_us: int = 0
    # Incremented by every write; writes are compare-and-set on it (see user_store.py).
    version: int = 0


@dataclass(frozen=True)
class UserPatch:
    """The changes one UpsertUser or UpdateUser makes; None leaves a field unchanged."""

    email: str | None = None
    phone: str | None = None
    time_zone: str | None = None
    locale: str | None = None
    replace_attributes: dict[str, Any] | None = None
    set_attributes: dict[str, Any] = field(default_factory=dict)
    remove_attributes: tuple[str, ...] = ()
