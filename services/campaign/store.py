"""Campaign records, their fan-out position and the due list in Redis.

A campaign is one hash (`cmp:{c:<id>}`): the user-editable definition as Campaign
proto bytes, and beside it the fields scripts must read (state, times, the stream
cursor). State changes are Lua scripts that check the current state first, so two
processes can never both launch, or cancel and complete, one campaign.
docs/keys/campaign.md lists every key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import timestamp_pb2

from herald.campaign.v1 import campaign_pb2
from services.campaign import keys
from services.core.redis import RedisClient, load_script

S = campaign_pb2
OUTPUT_FIELDS = (
    "campaign_id",
    "state",
    "failure_reason",
    "create_time",
    "update_time",
    "launch_time",
    "start_time",
    "complete_time",
)
TIME_FIELDS = {
    "create": "create_time",
    "update": "update_time",
    "launch": "launch_time",
    "start": "start_time",
    "complete": "complete_time",
}
SCRIPTS = "services.campaign.scripts"


def _ts(ms: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromMilliseconds(ms)
    return out


@dataclass
class Stored:
    campaign: campaign_pb2.Campaign
    cursor: str
    resolved: bool
    launch_request_id: str
    estimated: int
    settle_since_ms: int = 0  # when the fan-out finished and outcomes began to settle
    launch_trace: str = ""  # the LaunchCampaign call's W3C traceparent: the fan-out continues it

    @property
    def state(self) -> int:
        return int(self.campaign.state)


def _text(raw: dict[bytes, bytes], name: str) -> str:
    return raw.get(name.encode(), b"").decode()


class CampaignStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis: Any = redis  # redis-py's async stubs do not type bytes replies
        self._transition: Any = load_script(redis, SCRIPTS, "transition.lua")
        self._delete: Any = load_script(redis, SCRIPTS, "delete.lua")
        self._commit: Any = load_script(redis, SCRIPTS, "commit.lua")
        self._lease: Any = load_script(redis, SCRIPTS, "lease.lua")

    # -- records ---------------------------------------------------------------------
    @staticmethod
    def definition_bytes(campaign: campaign_pb2.Campaign) -> bytes:
        definition = campaign_pb2.Campaign()
        definition.CopyFrom(campaign)
        for name in OUTPUT_FIELDS:
            definition.ClearField(name)  # type: ignore[arg-type]
        return definition.SerializeToString(deterministic=True)

    async def create(self, campaign: campaign_pb2.Campaign, now_ms: int) -> None:
        cid = campaign.campaign_id
        await self.redis.hset(
            keys.campaign(cid),
            mapping={
                "app": campaign.app_id,
                "proto": self.definition_bytes(campaign),
                "state": str(S.CAMPAIGN_STATE_DRAFT),
                "create": now_ms,
                "update": now_ms,
            },
        )
        await self.redis.zadd(keys.app_campaigns(campaign.app_id), {cid: now_ms})

    async def get(self, campaign_id: str) -> Stored | None:
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.campaign(campaign_id))
        if not raw or b"proto" not in raw:
            return None
        campaign = campaign_pb2.Campaign.FromString(raw[b"proto"])
        campaign.campaign_id = campaign_id
        campaign.state = int(raw[b"state"])  # type: ignore[assignment]
        campaign.failure_reason = _text(raw, "failure")
        for field, name in TIME_FIELDS.items():
            if raw.get(field.encode()):
                getattr(campaign, name).CopyFrom(_ts(int(raw[field.encode()])))
        return Stored(
            campaign,
            _text(raw, "cursor"),
            raw.get(b"resolved") == b"1",
            _text(raw, "launch_req"),
            int(raw.get(b"estimated", b"0") or 0),
            int(raw.get(b"settle", b"0") or 0),
            _text(raw, "trace"),
        )

    async def transition(
        self,
        campaign_id: str,
        allowed: tuple[int, ...],
        new_state: int | None,
        fields: dict[str, Any] | None = None,
        cancel_held: bool = False,
    ) -> tuple[bool, int | None]:
        """(changed, state before) — state None when the campaign does not exist."""
        args: list[Any] = [
            ",".join(str(s) for s in allowed),
            "" if new_state is None else str(new_state),
            "1" if cancel_held else "0",
        ]
        for name, value in (fields or {}).items():
            args += [name, value]
        done, state = await self._transition(
            keys=[keys.campaign(campaign_id), keys.report(campaign_id), keys.held(campaign_id)],
            args=args,
        )
        before = int(state) if state not in (b"", "") else None
        return bool(done), before

    async def delete(self, campaign: campaign_pb2.Campaign) -> tuple[bool, int | None]:
        cid = campaign.campaign_id
        done, state = await self._delete(
            keys=[
                keys.campaign(cid),
                keys.report(cid),
                keys.held(cid),
                keys.finals(cid),
                keys.opened(cid),
                keys.dismissed(cid),
                keys.events(cid),
                keys.lease(cid),
            ]
        )
        if done:
            await self.redis.zrem(keys.app_campaigns(campaign.app_id), cid)
            await self.redis.zrem(keys.DUE, cid)
        return bool(done), int(state) if state not in (b"", "") else None

    async def list_ids(
        self, app_id: str, before: tuple[int, str] | None, count: int
    ) -> list[tuple[str, int]]:
        """Campaign ids newest first, strictly after the (score, id) position `before`."""
        high: Any = "+inf" if before is None else before[0]
        found: list[tuple[bytes, float]] = await self.redis.zrevrangebyscore(
            keys.app_campaigns(app_id), high, "-inf", start=0, num=count + 200, withscores=True
        )
        out = []
        for member, score in found:
            cid = member.decode()
            if before is not None and (int(score), cid) >= before:
                continue
            out.append((cid, int(score)))
        out.sort(key=lambda item: (item[1], item[0]), reverse=True)
        return out

    async def drop_from_list(self, app_id: str, campaign_id: str) -> None:
        await self.redis.zrem(keys.app_campaigns(app_id), campaign_id)

    # -- create idempotency ------------------------------------------------------------
    async def claim_request(
        self, app_id: str, request_id: str, value: str, ttl: int = 86400
    ) -> str | None:
        """Stores `value` for the request id unless one is there; returns the existing one."""
        key = keys.create_request(app_id, request_id)
        if await self.redis.set(key, value, nx=True, ex=ttl):
            return None
        existing = await self.redis.get(key)
        return existing.decode() if existing is not None else None

    # -- due list and leases -------------------------------------------------------------
    async def set_due(self, campaign_id: str, at_ms: int) -> None:
        await self.redis.zadd(keys.DUE, {campaign_id: at_ms})

    async def remove_due(self, campaign_id: str) -> None:
        await self.redis.zrem(keys.DUE, campaign_id)

    async def due(self, now_ms: int, limit: int = 20) -> list[str]:
        found = await self.redis.zrangebyscore(keys.DUE, "-inf", now_ms, start=0, num=limit)
        return [member.decode() for member in found]

    async def next_due(self) -> int | None:
        found = await self.redis.zrange(keys.DUE, 0, 0, withscores=True)
        return int(found[0][1]) if found else None

    async def lease(self, campaign_id: str, owner: str, ttl_ms: int) -> bool:
        return bool(await self._lease(keys=[keys.lease(campaign_id)], args=[owner, ttl_ms, ""]))

    async def release(self, campaign_id: str, owner: str) -> None:
        await self._lease(keys=[keys.lease(campaign_id)], args=[owner, 0, "release"])

    async def global_lease(self, key: str, owner: str, ttl_ms: int) -> bool:
        return bool(await self._lease(keys=[key], args=[owner, ttl_ms, ""]))

    # -- fan-out progress ---------------------------------------------------------------
    async def commit(
        self,
        campaign_id: str,
        owner: str,
        cursor: str | None,
        resolved: bool,
        counters: dict[str, int],
        hold: list[tuple[int, bytes]],
        released: list[bytes],
    ) -> int:
        """1 committed; 2 counted but the campaign was cancelled meanwhile (stop);
        0 not counted (lease lost or no longer SENDING/CANCELLED: the batch is replayed
        by whoever holds the lease)."""
        args: list[Any] = [owner, "-" if cursor is None else cursor, "1" if resolved else "0"]
        pairs = [(k, v) for k, v in counters.items() if v]
        args.append(len(pairs))
        for name, delta in pairs:
            args += [name, delta]
        args.append(len(hold))
        for score, member in hold:
            args += [score, member]
        args.append(len(released))
        args += released
        done = await self._commit(
            keys=[
                keys.campaign(campaign_id),
                keys.report(campaign_id),
                keys.held(campaign_id),
                keys.lease(campaign_id),
            ],
            args=args,
        )
        return int(done)

    async def held_due(self, campaign_id: str, now_ms: int, limit: int) -> list[bytes]:
        found: list[bytes] = await self.redis.zrangebyscore(
            keys.held(campaign_id), "-inf", now_ms, start=0, num=limit
        )
        return found

    async def next_held(self, campaign_id: str) -> int | None:
        found = await self.redis.zrange(keys.held(campaign_id), 0, 0, withscores=True)
        return int(found[0][1]) if found else None

    async def state(self, campaign_id: str) -> int | None:
        raw = await self.redis.hget(keys.campaign(campaign_id), "state")
        return int(raw) if raw is not None else None

    async def counters(self, campaign_id: str) -> dict[str, int]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.report(campaign_id))
        return {k.decode(): int(v) for k, v in raw.items()}
