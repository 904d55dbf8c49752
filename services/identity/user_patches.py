"""Pure rules for what an UpsertUser / UpdateUser request changes (no I/O).

Kept apart from users.py so the field-mask semantics can be unit-tested directly:
- an empty mask writes every field that is set and leaves the others alone;
- a mask writes exactly its paths, so a masked empty field clears it;
- "attributes" replaces them all (or merges key by key with merge_attributes, where a
  null value removes the key); "attributes.<key>" sets that key, or removes it when the
  request's attributes do not have it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from services.identity.user_model import User, UserPatch

UPDATABLE_PATHS = ("email", "phone", "time_zone", "locale", "attributes")
ATTRIBUTE_PREFIX = "attributes."


@dataclass(frozen=True)
class UserInput:
    """A request's user, already normalised; attributes None when the field is unset."""

    external_id: str
    email: str = ""
    phone: str = ""
    time_zone: str = ""
    locale: str = ""
    attributes: dict[str, Any] | None = None


def _attribute_changes(given: dict[str, Any], merge: bool) -> UserPatch:
    if not merge:
        return UserPatch(replace_attributes=dict(given))
    return UserPatch(
        set_attributes={key: value for key, value in given.items() if value is not None},
        remove_attributes=tuple(key for key, value in given.items() if value is None),
    )


def build_patch(given: UserInput, mask: Sequence[str], merge: bool) -> UserPatch:
    if not mask:
        patch = (
            _attribute_changes(given.attributes, merge)
            if given.attributes is not None
            else UserPatch()
        )
        return replace(
            patch,
            email=given.email or None,
            phone=given.phone or None,
            time_zone=given.time_zone or None,
            locale=given.locale or None,
        )
    patch = UserPatch()
    attributes = given.attributes or {}
    set_keys: dict[str, Any] = {}
    removed: list[str] = []
    for path in mask:
        if path == "attributes":
            patch = replace(patch, **vars(_attribute_changes(attributes, merge)))
        elif path.startswith(ATTRIBUTE_PREFIX):
            key = path[len(ATTRIBUTE_PREFIX) :]
            if attributes.get(key) is not None:
                set_keys[key] = attributes[key]
            else:
                removed.append(key)
        else:
            patch = replace(patch, **{path: getattr(given, path)})
    return replace(
        patch,
        set_attributes={**patch.set_attributes, **set_keys},
        remove_attributes=(*patch.remove_attributes, *removed),
    )


def apply_patch(current: User | None, external_id: str, patch: UserPatch, now_us: int) -> User:
    """The user after the patch; create/update times and version are set by the caller."""
    base = current or User(external_id=external_id, create_us=now_us)
    attributes = (
        dict(patch.replace_attributes)
        if patch.replace_attributes is not None
        else dict(base.attributes)
    )
    attributes.update(patch.set_attributes)
    for key in patch.remove_attributes:
        attributes.pop(key, None)
    return replace(
        base,
        email=base.email if patch.email is None else patch.email,
        phone=base.phone if patch.phone is None else patch.phone,
        time_zone=base.time_zone if patch.time_zone is None else patch.time_zone,
        locale=base.locale if patch.locale is None else patch.locale,
        attributes=attributes,
        update_us=now_us,
    )


def same_content(left: User, right: User) -> bool:
    """Equal in everything a caller can set (times and version aside)."""
    return (
        left.email,
        left.phone,
        left.time_zone,
        left.locale,
        left.attributes,
    ) == (right.email, right.phone, right.time_zone, right.locale, right.attributes)
