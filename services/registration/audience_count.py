"""CountAudience: an exact count, or an estimate from a sample of whole shards.

Devices are spread over an app's 256 shards by a hash of their id, so every shard is a
random sample of the app's devices, and reading a few whole shards costs what reading
that many devices costs, whatever the app's size. The estimate:

- the size of every shard comes first (one HLEN each, pipelined): an audience whose
  apps hold at most `sample_size` devices is counted exactly, as is any count asked
  with exact = true;
- otherwise each app gets a share of the sample in proportion to its size, and its
  shards are read in order 0, 1, 2, ... until the share is reached (the same shards
  each time, so two estimates of an unchanged audience agree); each app's matches
  (devices, per platform) are scaled by its devices / devices read (a ratio
  estimator: shards of unequal size do not bias it);
- distinct users cannot be scaled that way (a user's four devices are four draws,
  so a 1 % sample sees ~4 % of the users once each); each sampled user-bound device
  counts 1 / (how many devices of its user match), which sums to the number of users
  over the whole audience. That number is read from the user index for an evenly
  spaced subsample of USER_SAMPLE devices, each entry checked against its record
  and the query.

Accuracy: for a query matching a share p of the n sampled devices, the relative
standard error of the device estimate is about sqrt((1 - p) / (n p)): at the default
n = 5,000, 1.4 % when half the devices match, 14 % when 1 % do (docs/registration.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.registration import record
from services.registration.record import AudienceView
from services.registration.store import RegistrationStore

DEFAULT_SAMPLE = 5_000
MAX_SAMPLE = 1_000_000
USER_SAMPLE = 300
USERS_PER_READ = 1000
SHARDS_PER_READ = 16

Matcher = Callable[[AudienceView], bool]


@dataclass
class AudienceCount:
    devices: float = 0.0
    users: float = 0.0
    per_platform: dict[int, float] = field(default_factory=dict)
    exact: bool = True
    examined: int = 0


def sampled_shards(sizes: list[int], share: float) -> list[int]:
    """Shards 0, 1, 2, ... until they hold `share` devices (at least one non-empty)."""
    chosen: list[int] = []
    held = 0
    for shard, size in enumerate(sizes):
        chosen.append(shard)
        held += size
        if held >= share and held > 0:
            break
    return chosen


@dataclass
class _Sample:
    """The matches among some shards of one app."""

    read: int = 0
    devices: int = 0
    per_platform: dict[int, int] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)
    bound: list[str] = field(default_factory=list)  # the user of each bound match


async def read_shards(
    store: RegistrationStore, app_id: str, shards: list[int], matches: Matcher, exact: bool
) -> _Sample:
    """The matches of whole shards of an app, SHARDS_PER_READ shards in memory at a time;
    `exact`: the distinct users, else the user of each user-bound match."""
    sample = _Sample()
    for start in range(0, len(shards), SHARDS_PER_READ):
        part = shards[start : start + SHARDS_PER_READ]
        for content in await store.shard_records([(app_id, s) for s in part]):
            sample.read += len(content)
            for packed in content.values():
                rec = record.audience_view(packed)
                if not matches(rec):
                    continue
                sample.devices += 1
                sample.per_platform[rec.platform] = sample.per_platform.get(rec.platform, 0) + 1
                if not rec.user_id:
                    continue
                if exact:
                    sample.users.add(rec.user_id)
                else:
                    sample.bound.append(rec.user_id)
    return sample


async def count(
    store: RegistrationStore,
    app_ids: Sequence[str],
    matches: Matcher,
    exact: bool,
    sample_size: int,
    user_ids: Sequence[str] = (),
) -> AudienceCount:
    """The audience's size among `app_ids`: exact when asked or when the apps hold at
    most `sample_size` devices, else estimated from whole shards (module docstring).
    A query naming its users is counted exactly from the user index instead: its cost
    follows the users named, and a sample of a big app would rarely hold one of them."""
    if user_ids:
        return await count_users(store, app_ids, matches, user_ids)
    sizes = await store.shard_sizes(app_ids) if app_ids else {}
    total = sum(sum(s) for s in sizes.values())
    result = AudienceCount(exact=exact or total <= sample_size)
    users: set[str] = set()
    bound: list[tuple[str, float]] = []  # (user id, weight) of each sampled bound device
    for app_id in app_ids:
        app_total = sum(sizes[app_id])
        if not app_total:
            continue
        if result.exact:
            shards = [shard for shard, n in enumerate(sizes[app_id]) if n]
        else:
            shards = sampled_shards(sizes[app_id], sample_size * app_total / total)
        sample = await read_shards(store, app_id, shards, matches, result.exact)
        result.examined += sample.read
        if not sample.read:
            continue
        # Scaled by what was read (a shard may have changed since its HLEN) plus what
        # the unread shards hold.
        unread = app_total - sum(sizes[app_id][s] for s in shards)
        scale = 1.0 if result.exact else (sample.read + max(0, unread)) / sample.read
        result.devices += sample.devices * scale
        for platform, n in sample.per_platform.items():
            result.per_platform[platform] = result.per_platform.get(platform, 0.0) + n * scale
        if result.exact:
            users |= sample.users
        else:
            bound += [(user_id, scale) for user_id in sample.bound]
    result.users = (
        float(len(users)) if result.exact else await _estimate_users(store, app_ids, matches, bound)
    )
    return result


async def count_users(
    store: RegistrationStore, app_ids: Sequence[str], matches: Matcher, user_ids: Sequence[str]
) -> AudienceCount:
    """The exact count of an audience limited to these users (≤ 10,000): their devices
    from the user index, USERS_PER_READ users at a time, each checked on its record."""
    result = AudienceCount()
    users: set[str] = set()
    apps = set(app_ids)
    unique = sorted(set(user_ids))
    for start in range(0, len(unique), USERS_PER_READ):
        for _, _, rec in await user_records(store, unique[start : start + USERS_PER_READ], apps):
            result.examined += 1
            if matches(rec):
                result.devices += 1
                result.per_platform[rec.platform] = result.per_platform.get(rec.platform, 0) + 1
                users.add(rec.user_id)
    result.users = float(len(users))
    return result


async def user_records(
    store: RegistrationStore, user_ids: list[str], apps: set[str]
) -> list[tuple[str, str, AudienceView]]:
    """(app, device id, record) of these users' devices in `apps`, each still bound to
    its user (an index entry may be stale: the record decides)."""
    wanted: dict[str, list[tuple[str, str]]] = {}  # app -> [(user, device)]
    for user_id, entries in zip(user_ids, await store.users_devices(user_ids), strict=True):
        for app_id, device_id, _entry in entries:
            if app_id in apps:
                wanted.setdefault(app_id, []).append((user_id, device_id))
    found: list[tuple[str, str, AudienceView]] = []
    for app_id, pairs in wanted.items():
        records = await store.get_many(app_id, [device_id for _, device_id in pairs])
        for (user_id, device_id), packed in zip(pairs, records, strict=True):
            if packed is not None:
                rec = record.audience_view(packed)
                if rec.user_id == user_id:
                    found.append((app_id, device_id, rec))
    return found


async def _estimate_users(
    store: RegistrationStore,
    app_ids: Sequence[str],
    matches: Matcher,
    bound: list[tuple[str, float]],
) -> float:
    """Σ weight / (matching devices of the user) over the sampled user-bound devices,
    from an evenly spaced subsample of at most USER_SAMPLE of them."""
    if not bound:
        return 0.0
    step = max(1, len(bound) // USER_SAMPLE)
    subsample = bound[::step][:USER_SAMPLE]
    matching = await _matching_devices(
        store, sorted({user_id for user_id, _ in subsample}), set(app_ids), matches
    )
    total = sum(weight / max(1, matching.get(user_id, 1)) for user_id, weight in subsample)
    return total * len(bound) / len(subsample)


async def _matching_devices(
    store: RegistrationStore, user_ids: list[str], apps: set[str], matches: Matcher
) -> dict[str, int]:
    """How many devices of each user (in the queried apps) are bound to them and match."""
    counts: dict[str, int] = {}
    for _, _, rec in await user_records(store, user_ids, apps):
        if matches(rec):
            counts[rec.user_id] = counts.get(rec.user_id, 0) + 1
    return counts
