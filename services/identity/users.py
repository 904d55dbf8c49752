"""The rules for users: validation, uniqueness of e-mail and phone, writes, lookups.

Users are shared by every app of the installation (as a Braze workspace shares them), so
"push enabled for any app" is a property of the user, and one e-mail or phone belongs
to at most one user.

Uniqueness without cross-slot transactions: before a record gets an e-mail (or phone),
the address is reserved with SET NX on its own key. The user record stays the source
of truth: a reservation whose owner's record does not carry the address is stale (a
crash between reserving and writing, or between writing and releasing) and is taken
over atomically (compare-and-set) once it is older than RESERVATION_GRACE_US, which
leaves an in-flight write time to finish. Lookups verify the same way and drop stale
reservations as they meet them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

from services.core.errors import (
    Aborted,
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Validator,
)
from services.identity import attributes, pagination
from services.identity.clock import MICROS_PER_SECOND, now_us
from services.identity.identifiers import (
    Identifier,
    IdentifierKind,
    external_id_problem,
    normalise_email,
    normalise_phone,
)
from services.identity.user_model import User
from services.identity.user_patches import (
    ATTRIBUTE_PREFIX,
    UPDATABLE_PATHS,
    UserInput,
    apply_patch,
    build_patch,
    same_content,
)
from services.identity.user_store import Reservation, Unique, UserStore
from services.identity.validation import (
    check_update_mask,
    is_locale,
    is_time_zone,
    raise_collected,
)

RESERVATION_GRACE_US = 30 * MICROS_PER_SECOND
WRITE_ATTEMPTS = 5
MAX_BATCH = 1000
READABLE_PATHS = (
    "external_id",
    "email",
    "phone",
    "attributes",
    "time_zone",
    "locale",
    "create_time",
    "update_time",
)
_LIST_KIND = "users"
_TAKEN = {Unique.EMAIL: "USER_EMAIL_TAKEN", Unique.PHONE: "USER_PHONE_TAKEN"}


class StoredUsers(NamedTuple):
    """BatchGetUsers' read: which User attributes were read (names of
    user_store.RECORD_FIELD_OF), each found user's stored values of them (then its
    version), and the ids no user has."""

    fields: tuple[str, ...]
    found: list[tuple[str, list[bytes | None]]]
    missing: list[str]


def user_not_found(description: str) -> NotFound:
    return NotFound("USER_NOT_FOUND", f"no user has {description}")


def _value_of(user: User, kind: Unique) -> str:
    return user.email if kind is Unique.EMAIL else user.phone


def identifier_from(kind: IdentifierKind | None, raw: str, field: str) -> Identifier:
    """A normalised identifier, or INVALID_ARGUMENT naming `field`."""
    if kind is None:
        raise InvalidArgument(
            "an identifier is required",
            [FieldViolation(field, "set one of external_id, email or phone")],
        )
    if kind is IdentifierKind.EMAIL:
        value, problem = normalise_email(raw), "must be an e-mail address"
    elif kind is IdentifierKind.PHONE:
        value, problem = (
            normalise_phone(raw),
            "must be a phone number in E.164 form (+<country><number>)",
        )
    else:
        problem = external_id_problem(raw)
        value = None if problem else raw
    if value is None:
        raise InvalidArgument(
            "the request has invalid fields", [FieldViolation(f"{field}.{kind.value}", problem)]
        )
    return Identifier(kind, value)


def normalised_input(given: UserInput, check: Validator, prefix: str = "user.") -> UserInput:
    """Validates every field of a request's user and returns it normalised."""
    problem = external_id_problem(given.external_id)
    if problem:
        check.add(f"{prefix}external_id", problem)
    email = given.email
    if email:
        email = normalise_email(email) or ""
        if not email:
            check.add(f"{prefix}email", "must be an e-mail address")
    phone = given.phone
    if phone:
        phone = normalise_phone(phone) or ""
        if not phone:
            check.add(f"{prefix}phone", "must be a phone number in E.164 form (+<country><number>)")
    if given.time_zone and not is_time_zone(given.time_zone):
        check.add(f"{prefix}time_zone", "must be an IANA time zone such as 'Europe/Paris'")
    if given.locale and not is_locale(given.locale):
        check.add(f"{prefix}locale", "must be a BCP 47 language tag such as 'fr-FR'")
    if given.attributes is not None:
        attributes.check_keys(check, given.attributes, f"{prefix}attributes")
        attributes.check_size(check, given.attributes, f"{prefix}attributes")
    return replace(given, email=email, phone=phone)


def check_read_mask(paths: Sequence[str]) -> None:
    bad = [
        FieldViolation(f"read_mask.paths[{index}]", f"{path!r} is not a user field")
        for index, path in enumerate(paths)
        if path not in READABLE_PATHS
        and not (path.startswith(ATTRIBUTE_PREFIX) and len(path) > len(ATTRIBUTE_PREFIX))
    ]
    if bad:
        raise InvalidArgument("read_mask names unknown fields", bad)


# What each readable path needs from the stored record (external_id is the key).
_RECORD_FIELDS_OF_PATH = {
    "email": "email",
    "phone": "phone",
    "attributes": "attributes",
    "time_zone": "time_zone",
    "locale": "locale",
    "create_time": "create_us",
    "update_time": "update_us",
}


def _record_fields_for(read_mask: Sequence[str]) -> tuple[str, ...]:
    """The User attributes a read mask shows (every one without a mask)."""
    if not read_mask:
        return tuple(_RECORD_FIELDS_OF_PATH.values())
    wanted = {
        "attributes" if path.startswith(ATTRIBUTE_PREFIX) else _RECORD_FIELDS_OF_PATH.get(path, "")
        for path in read_mask
    }
    # In _RECORD_FIELDS_OF_PATH's order, the User message's, which user_wire.py writes in.
    return tuple(name for name in _RECORD_FIELDS_OF_PATH.values() if name in wanted)


class Users:
    def __init__(self, store: UserStore) -> None:
        self.store = store

    # --- reads ----------------------------------------------------------------------

    async def get(self, external_id: str) -> User:
        problem = external_id_problem(external_id)
        if problem:
            raise InvalidArgument(
                "the request has invalid fields", [FieldViolation("external_id", problem)]
            )
        user = await self.store.get(external_id)
        if user is None:
            raise user_not_found("this external id")
        return user

    async def find(self, identifier: Identifier) -> User | None:
        if identifier.kind is IdentifierKind.EXTERNAL_ID:
            return await self.store.get(identifier.value)
        kind = Unique.EMAIL if identifier.kind is IdentifierKind.EMAIL else Unique.PHONE
        held = await self.store.reservation(kind, identifier.value)
        if held is None:
            return None
        owner = await self.store.get(held.owner) if held.owner else None
        if owner is not None and _value_of(owner, kind) == identifier.value:
            return owner
        if now_us() - held.reserved_us > RESERVATION_GRACE_US:
            await self.store.release(kind, identifier.value, held)  # lazy repair
        return None

    async def lookup(self, identifier: Identifier) -> User:
        user = await self.find(identifier)
        if user is None:
            raise user_not_found(f"this {identifier.kind.value.replace('_', ' ')}")
        return user

    async def find_many(self, identifiers: Sequence[Identifier]) -> list[User | None]:
        by_id = [
            identifier.value
            for identifier in identifiers
            if identifier.kind is IdentifierKind.EXTERNAL_ID
        ]
        fetched = dict(zip(by_id, await self.store.get_many(by_id), strict=True))
        found: list[User | None] = []
        for identifier in identifiers:
            if identifier.kind is IdentifierKind.EXTERNAL_ID:
                found.append(fetched[identifier.value])
            else:
                found.append(await self.find(identifier))
        return found

    async def list_page(self, page_size: int, page_token: str) -> tuple[list[User], str]:
        size = pagination.page_size(page_size)
        after = str(pagination.decode(page_token, _LIST_KIND, "")) if page_token else ""
        per_shard = await self.store.ids_in_every_shard(after, size + 1)
        ids = list(itertools.islice(heapq.merge(*per_shard), size + 1))
        page_ids, more = ids[:size], len(ids) > size
        users = [user for user in await self.store.get_many(page_ids) if user is not None]
        token = pagination.encode(_LIST_KIND, "", page_ids[-1]) if more else ""
        return users, token

    async def batch_get(self, external_ids: Sequence[str], read_mask: Sequence[str]) -> StoredUsers:
        """The users' stored values of the fields the read mask shows, in request order,
        and the ids no user has. Left as stored: BatchGetUsers writes them into its
        answer as they are (user_wire.py)."""
        if not 1 <= len(external_ids) <= MAX_BATCH:
            raise InvalidArgument(
                f"ask for 1 to {MAX_BATCH} users per call",
                [FieldViolation("external_ids", f"must hold 1 to {MAX_BATCH} ids")],
                reason="BATCH_TOO_LARGE",
            )
        # An id too long or with control characters is a caller's mistake (GetUser's
        # check); a blank one is only no user's, answered as missing: Registration
        # binds devices to any user id text, and a campaign's fan-out asks for them all.
        violations = [
            FieldViolation(f"external_ids[{index}]", problem)
            for index, external_id in enumerate(external_ids)
            if external_id.strip() and (problem := external_id_problem(external_id))
        ]
        if violations:
            raise InvalidArgument("the request has invalid fields", violations[:100])
        check_read_mask(read_mask)
        fields = _record_fields_for(read_mask)
        records = await self.store.read_records(external_ids, fields)
        found: list[tuple[str, list[bytes | None]]] = []
        missing: list[str] = []
        for external_id, values in zip(external_ids, records, strict=True):
            if values is None:
                missing.append(external_id)
            else:
                found.append((external_id, values))
        return StoredUsers(fields, found, missing)

    # --- writes ---------------------------------------------------------------------

    async def upsert(self, given: UserInput, mask: Sequence[str], merge: bool) -> tuple[User, bool]:
        check = Validator()
        given = normalised_input(given, check)
        raise_collected(check)
        if mask:
            check_update_mask(mask, UPDATABLE_PATHS, (ATTRIBUTE_PREFIX,))
        return await self._write(given, mask, merge, must_exist=False)

    async def update(self, given: UserInput, mask: Sequence[str]) -> User:
        check = Validator()
        given = normalised_input(given, check)
        raise_collected(check)
        check_update_mask(mask, UPDATABLE_PATHS, (ATTRIBUTE_PREFIX,))
        user, _ = await self._write(given, mask, merge=False, must_exist=True)
        return user

    async def ensure(self, external_id: str) -> None:
        """Creates the user with only its external id if it does not exist."""
        if await self.store.get(external_id) is None:
            await self.store.write(User(external_id, create_us=now_us(), update_us=now_us()), 0)

    async def _write(
        self, given: UserInput, mask: Sequence[str], merge: bool, must_exist: bool
    ) -> tuple[User, bool]:
        patch = build_patch(given, mask, merge)
        for _ in range(WRITE_ATTEMPTS):
            current = await self.store.get(given.external_id)
            if current is None and must_exist:
                raise user_not_found("this external id")
            now = now_us()
            wanted = apply_patch(current, given.external_id, patch, now)
            check = Validator()
            attributes.check_size(check, wanted.attributes, "user.attributes")
            raise_collected(check)
            if current is not None and same_content(current, wanted):
                return current, False
            reserved = await self._reserve(wanted, current, now)
            version = await self.store.write(wanted, current.version if current else 0)
            if version == 0:  # written meanwhile by someone else: read again
                for kind, value, claim in reserved:
                    await self.store.release(kind, value, claim)
                continue
            if current is not None:
                await self._release_replaced(current, wanted)
            return replace(wanted, version=version), current is None
        raise Aborted(
            "CONCURRENT_MODIFICATION",
            "the user kept changing while this call tried to write it; retry",
        )

    async def _reserve(
        self, wanted: User, current: User | None, now: int
    ) -> list[tuple[Unique, str, Reservation]]:
        reserved: list[tuple[Unique, str, Reservation]] = []
        try:
            for kind in (Unique.EMAIL, Unique.PHONE):
                value = _value_of(wanted, kind)
                if value and (current is None or _value_of(current, kind) != value):
                    claim = await self._reserve_one(kind, value, wanted.external_id, now)
                    if claim is not None:
                        reserved.append((kind, value, claim))
        except AlreadyExists:
            for kind, value, claim in reserved:
                await self.store.release(kind, value, claim)
            raise
        return reserved

    async def _reserve_one(
        self, kind: Unique, value: str, external_id: str, now: int
    ) -> Reservation | None:
        claim = Reservation(external_id, now)
        holder = await self.store.reserve(kind, value, claim)
        if holder is None:
            return claim
        if holder.owner == external_id:
            return None
        owner = await self.store.get(holder.owner) if holder.owner else None
        still_owned = owner is not None and _value_of(owner, kind) == value
        in_flight = now - holder.reserved_us < RESERVATION_GRACE_US
        if (
            not still_owned
            and not in_flight
            and await self.store.take_over(kind, value, holder, claim)
        ):
            return claim
        field = "email" if kind is Unique.EMAIL else "phone"
        raise AlreadyExists(
            _TAKEN[kind],
            f"another user has this {field.replace('email', 'e-mail address')}",
            {"field": f"user.{field}"},
        )

    async def _release_replaced(self, before: User, after: User) -> None:
        for kind in (Unique.EMAIL, Unique.PHONE):
            old = _value_of(before, kind)
            if old and old != _value_of(after, kind):
                held = await self.store.reservation(kind, old)
                if held is not None and held.owner == before.external_id:
                    await self.store.release(kind, old, held)

    async def delete(
        self,
        external_id: str,
        allow_missing: bool,
        unbind_devices: Callable[[str], Awaitable[int]],
    ) -> tuple[bool, int]:
        """Unbinds the user's devices (Registration), then deletes the record.

        Devices go first: if Registration is down the call fails with the user intact
        and can be retried, rather than leaving devices bound to a user who is gone."""
        user = await self.store.get(external_id) if external_id else None
        if user is None:
            if allow_missing and external_id:
                return False, 0
            await self.get(external_id)  # raises the right error
        assert user is not None
        unbound = await unbind_devices(external_id)
        await self.store.delete(external_id)
        await self._release_replaced(user, User(external_id))
        return True, unbound
