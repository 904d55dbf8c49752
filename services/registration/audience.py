"""StreamAudience: walk an audience shard by shard, in a stable order (CountAudience's
exact count and estimate are audience_count.py).

The order is (app id, shard number, device id bytes). A cursor is the position of the
last device sent, so a resumed stream continues strictly after it and never repeats a
device. Only a few shards' records are in memory at a time (SHARDS_PER_READ of the
256 of an app), never the whole audience. The first read of an app takes one shard
and each next read twice as many up to SHARDS_PER_READ, so a caller that wants only
the first batch (a preview's sample) does not wait for 16 shards of a big app. A query
naming its users reads their devices from the user index instead of every shard, in
the same order.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from herald.registration.v1 import device_pb2
from herald.type.v1 import filter_pb2
from services.core.app_versions import version_key
from services.core.errors import Validator
from services.registration import audience_count, pagination, record, rules
from services.registration.apps import AppDirectory
from services.registration.model import FOREGROUND, PLATFORMS
from services.registration.record import AudienceView
from services.registration.store import DEVICE_SHARDS, RegistrationStore, device_shard
from services.registration.validation import check_id, fail

DEFAULT_BATCH = 500
MAX_BATCH = 5000
MAX_USER_IDS = 10_000
MAX_PARTITIONS = 256
SHARDS_PER_READ = 16

REACH_FOREGROUND = device_pb2.REACHABILITY_FOREGROUND
REACH_VISIBLE = device_pb2.REACHABILITY_VISIBLE

_EQ, _NE = filter_pb2.COMPARISON_OPERATOR_EQUAL, filter_pb2.COMPARISON_OPERATOR_NOT_EQUAL
_LT, _LE = filter_pb2.COMPARISON_OPERATOR_LESS, filter_pb2.COMPARISON_OPERATOR_LESS_OR_EQUAL
_GT, _GE = filter_pb2.COMPARISON_OPERATOR_GREATER, filter_pb2.COMPARISON_OPERATOR_GREATER_OR_EQUAL


def compare(operator: int, left: tuple, right: tuple) -> bool:
    outcomes: dict[int, bool] = {
        _EQ: left == right,
        _NE: left != right,
        _LT: left < right,
        _LE: left <= right,
        _GT: left > right,
        _GE: left >= right,
    }
    return outcomes.get(operator, False)


@dataclass(frozen=True)
class AudienceQuery:
    app_ids: list[str] = field(default_factory=list)
    platforms: list[int] = field(default_factory=list)
    reachability: int = 0
    app_versions: list[tuple[int, str]] = field(default_factory=list)
    locales: list[str] = field(default_factory=list)
    time_zones: list[str] = field(default_factory=list)
    user_bound_only: bool = False
    user_ids: list[str] = field(default_factory=list)
    seen_after_ms: int = 0


@dataclass(slots=True)  # one per device an audience streams: no frozen-init cost
class Matched:
    app_id: str
    shard: int
    device_id: str
    record: AudienceView


class _Matcher:
    """Whether a record belongs to the audience. The query's filters become a list of
    checks once, so a record pays only for the filters the query uses (an audience
    walks every record of its apps)."""

    def __init__(self, query: AudienceQuery) -> None:
        checks: list[Callable[[AudienceView], bool]] = []
        if query.platforms:
            platforms = set(query.platforms)
            checks.append(lambda rec: rec.platform in platforms)
        if query.reachability in (REACH_FOREGROUND, REACH_VISIBLE):
            provisional_counts = query.reachability == REACH_VISIBLE

            def reachable(rec: AudienceView) -> bool:
                capability, provisional = rules.capability_of(
                    rec.platform, rec.authorization_status, rec.os_version, True
                )
                return capability == FOREGROUND or (provisional_counts and provisional)

            checks.append(reachable)
        if query.app_versions:
            versions = [(op, version_key(v)) for op, v in query.app_versions]

            def version_matches(rec: AudienceView) -> bool:
                key = version_key(rec.app_version)
                return key is not None and all(compare(op, key, want) for op, want in versions)  # type: ignore[arg-type]

            checks.append(version_matches)
        if query.locales:
            prefixes = [loc.lower().replace("_", "-") for loc in query.locales]

            def locale_matches(rec: AudienceView) -> bool:
                locale = rec.locale.lower().replace("_", "-")
                return any(locale == p or locale.startswith(p + "-") for p in prefixes)

            checks.append(locale_matches)
        if query.time_zones:
            time_zones = set(query.time_zones)
            checks.append(lambda rec: rec.time_zone in time_zones)
        if query.user_bound_only or query.user_ids:
            checks.append(lambda rec: bool(rec.user_id))
        if query.user_ids:
            user_ids = set(query.user_ids)
            checks.append(lambda rec: rec.user_id in user_ids)
        if query.seen_after_ms:
            seen_after = query.seen_after_ms
            checks.append(lambda rec: rec.last_seen_ms >= seen_after)
        self._checks = tuple(checks)

    def __call__(self, rec: AudienceView) -> bool:
        if not rec.token_kind:  # the token is checked before the matcher's own checks
            return False
        for check in self._checks:  # noqa: SIM110 - a loop, not a generator per record
            if not check(rec):
                return False
        return True


def partition_of(app_id: str, device_id: str, count: int) -> int:
    """A device's partition: BLAKE2b, not CRC-32 like the shards. CRC is affine over
    GF(2), so for ids of one length (UUIDs) crc32(app "\n" id) is crc32(id) XOR a
    constant, and a partition would be a set of whole shards: no thinning within a
    shard, which a sample of a partition relies on (Campaign's preview)."""
    digest = hashlib.blake2b(f"{app_id}\n{device_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def _reads(first_shard: int) -> list[list[int]]:
    """The shards of each read of an app from first_shard on: 1, 2, 4, 8, then 16."""
    reads, start, width = [], first_shard, 1
    while start < DEVICE_SHARDS:
        reads.append(list(range(start, min(start + width, DEVICE_SHARDS))))
        start += width
        width = min(2 * width, SHARDS_PER_READ)
    return reads


class Audiences:
    def __init__(self, store: RegistrationStore, apps: AppDirectory) -> None:
        self.store = store
        self.apps = apps

    def validate(
        self,
        query: AudienceQuery,
        batch_size: int,
        partition: tuple[int, int] | None,
        sample_size: int = 0,
    ) -> None:
        check = Validator()
        for i, app_id in enumerate(query.app_ids):
            check_id(check, f"query.app_ids[{i}]", app_id)
        for i, platform in enumerate(query.platforms):
            if platform not in PLATFORMS:
                check.add(f"query.platforms[{i}]", "is not a known platform")
        if query.reachability not in range(0, 4):
            check.add("query.reachability", "is not a known Reachability")
        for i, (operator, version) in enumerate(query.app_versions):
            if operator not in range(1, 7):
                check.add(f"query.app_versions[{i}].operator", "must be set")
            if version_key(version) is None:
                check.add(f"query.app_versions[{i}].version", 'must be a version like "4.12.0"')
        for i, locale in enumerate(query.locales):
            if not re.match(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$", locale):
                check.add(f"query.locales[{i}]", "must be a BCP 47 tag or prefix")
        if len(query.user_ids) > MAX_USER_IDS:
            check.add("query.user_ids", f"must hold at most {MAX_USER_IDS} user ids")
        if query.seen_after_ms < 0:
            check.add("query.seen_after_time", "must be a time after 1970")
        if not 0 <= batch_size <= MAX_BATCH:
            check.add("batch_size", f"must be 0 (default {DEFAULT_BATCH}) to {MAX_BATCH}")
        if partition is not None:
            index, count = partition
            if not 1 <= count <= MAX_PARTITIONS:
                check.add("partition.count", f"must be 1 to {MAX_PARTITIONS}")
            elif not 0 <= index < count:
                check.add("partition.index", "must be 0 to count - 1")
        if not 0 <= sample_size <= audience_count.MAX_SAMPLE:
            check.add(
                "sample_size",
                f"must be 0 (default {audience_count.DEFAULT_SAMPLE:,}) "
                f"to {audience_count.MAX_SAMPLE:,}",
            )
        fail(check)

    async def _apps(self, query: AudienceQuery) -> list[str]:
        for app_id in query.app_ids:
            await self.apps.require_app(app_id)
        if query.app_ids:
            return sorted(set(query.app_ids))
        # "Every app": a deleted app's devices are purged by Identity's DeleteApp; asking
        # Identity afresh (a handful of apps) also skips an app deleted while a replica
        # still had it cached and accepted a late registration.
        return [a for a in await self.store.apps_with_devices() if await self.apps.app_exists(a)]

    async def matching(
        self,
        query: AudienceQuery,
        partition: tuple[int, int] | None,
        after: tuple[str, int, str] | None,
    ) -> AsyncIterator[list[Matched]]:
        """The audience's devices in stream order, a shard's matches at a time (an
        async generator step per device would cost more than matching it)."""
        matches = _Matcher(query)
        if query.user_ids:
            yield await self._matching_users(query, matches, partition, after)
            return
        for app_id in await self._apps(query):
            if after is not None and app_id < after[0]:
                continue
            first_shard = after[1] if after is not None and app_id == after[0] else 0
            for shards in _reads(first_shard):
                contents = await self.store.shard_records([(app_id, s) for s in shards])
                for shard, content in zip(shards, contents, strict=True):
                    keys = sorted(content)
                    if after is not None and (app_id, shard) == (after[0], after[1]):
                        keys = keys[bisect.bisect_right(keys, after[2].encode()) :]
                    found = _shard_matches(app_id, shard, keys, content, matches, partition)
                    if found:
                        yield found

    async def _matching_users(
        self,
        query: AudienceQuery,
        matches: _Matcher,
        partition: tuple[int, int] | None,
        after: tuple[str, int, str] | None,
    ) -> list[Matched]:
        """A query naming its users (at most MAX_USER_IDS): their devices from the user
        index instead of a walk of every shard, in the same order, so cursors mean the
        same. A user has a handful of devices, so they fit in memory."""
        found = await audience_count.user_records(
            self.store, sorted(set(query.user_ids)), set(await self._apps(query))
        )
        keyed = sorted(
            (
                ((app_id, device_shard(device_id), device_id.encode()), rec)
                for app_id, device_id, rec in found
            ),
            key=lambda item: item[0],
        )
        resume = (after[0], after[1], after[2].encode()) if after is not None else None
        return [
            Matched(app_id, shard, device_key.decode(), rec)
            for (app_id, shard, device_key), rec in keyed
            if (resume is None or (app_id, shard, device_key) > resume)
            and not _outside(partition, app_id, device_key.decode())
            and matches(rec)
        ]

    async def stream(
        self,
        query: AudienceQuery,
        batch_size: int,
        cursor: str,
        partition: tuple[int, int] | None,
    ) -> AsyncIterator[tuple[list[Matched], str, int]]:
        """Batches of (devices, cursor after them, streamed count so far)."""
        self.validate(query, batch_size, partition)
        fingerprint = pagination.fingerprint("StreamAudience", query, partition)
        position = pagination.decode(cursor, fingerprint, "cursor", "INVALID_CURSOR")
        after = (str(position[0]), int(position[1]), str(position[2])) if position else None
        size = batch_size or DEFAULT_BATCH
        pending: list[Matched] = []
        streamed = 0
        async for found in self.matching(query, partition, after):
            pending += found
            while len(pending) >= size:
                batch, pending = pending[:size], pending[size:]
                streamed += size
                yield batch, self._cursor(fingerprint, batch[-1]), streamed
        if pending:
            streamed += len(pending)
            yield pending, self._cursor(fingerprint, pending[-1]), streamed

    @staticmethod
    def _cursor(fingerprint: str, last: Matched) -> str:
        return pagination.encode(fingerprint, [last.app_id, last.shard, last.device_id])

    async def count(
        self, query: AudienceQuery, exact: bool, sample_size: int
    ) -> audience_count.AudienceCount:
        """The audience's devices, distinct users and devices per platform: exact, or
        estimated from whole shards when the apps hold more than `sample_size` devices
        (audience_count.py)."""
        self.validate(query, 0, None, sample_size)
        return await audience_count.count(
            self.store,
            await self._apps(query),
            _Matcher(query),
            exact,
            sample_size or audience_count.DEFAULT_SAMPLE,
            query.user_ids,
        )


def _shard_matches(
    app_id: str,
    shard: int,
    keys: list[bytes],
    content: dict[bytes, bytes],
    matches: _Matcher,
    partition: tuple[int, int] | None,
) -> list[Matched]:
    """The matching devices among `keys` of one shard, in order."""
    view = record.audience_view
    found = []
    for key in keys:
        device_id = key.decode()
        if partition is not None and _outside(partition, app_id, device_id):
            continue
        rec = view(content[key])
        if matches(rec):
            found.append(Matched(app_id, shard, device_id, rec))
    return found


def _outside(partition: tuple[int, int] | None, app_id: str, device_id: str) -> bool:
    """Whether the device belongs to another partition ({index, count}) than the one
    asked for; never when the whole audience is asked."""
    return partition is not None and partition_of(app_id, device_id, partition[1]) != partition[0]
