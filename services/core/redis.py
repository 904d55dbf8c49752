"""The Redis connection and the helpers every store uses to stay Cluster-ready.

One URL configures it. With `HERALD_REDIS_CLUSTER=true` the same code gets a
RedisCluster client: stores only run multi-key commands and Lua scripts on keys that
share a hash tag (see `hash_tag`), and spread big indexes over `shard_tag`s, so nothing
changes when the deployment moves from one node to a cluster.
"""

from __future__ import annotations

import asyncio
import zlib
from importlib import resources
from typing import Any, TypeAlias

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError

from services.core.config import Settings
from services.core.errors import Unavailable

RedisClient: TypeAlias = "Redis | RedisCluster"


def connect(settings: Settings) -> RedisClient:
    """A client for the configured Redis; bytes in and out (stores decode what they read)."""
    if settings.redis_cluster:
        return RedisCluster.from_url(
            settings.redis_url,
            decode_responses=False,
            max_connections=settings.redis_max_connections,
        )
    # A blocking pool: a burst of concurrent commands waits for a free connection
    # (up to `timeout`) instead of failing once `max_connections` are in use.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        decode_responses=False,
        health_check_interval=30,
        max_connections=settings.redis_max_connections,
        timeout=10,
    )
    pool.connection_class = packed_by_hiredis(pool.connection_class)
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


_PLAIN = frozenset({str, bytes, int, float})


def packed_by_hiredis(
    connection_class: type[AbstractConnection],
) -> type[AbstractConnection]:
    """`connection_class` (plain, TLS or Unix socket, as the URL chose) with commands
    packed by hiredis in C. redis-py's asyncio connection packs every argument in
    Python: for Delivery's Enqueue (a script call of thousands of keys and a pipeline of
    a thousand SETs per batch) that was the largest single cost. hiredis packs only
    commands of plain str, bytes, int and float arguments, where its bytes are
    redis-py's; any other argument sends the command to redis-py's packer, so errors
    and odd types behave as before."""

    class HiredisPacking(connection_class):  # type: ignore[valid-type,misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            if (isinstance(args[0], str) and " " in args[0]) or not all(
                type(arg) in _PLAIN for arg in args
            ):
                # "CONFIG GET" (redis-py splits it), and anything but the plain types:
                # hiredis takes a memoryview's buffer whole, ignoring its strides, and
                # converts subclasses its own way.
                return super().pack_command(*args)
            return [hiredis.pack_command(args)]

    HiredisPacking.__name__ = HiredisPacking.__qualname__ = (
        f"HiredisPacking{connection_class.__name__}"
    )
    return HiredisPacking


async def wait_until_ready(client: RedisClient, within: float = 10.0) -> None:
    """PING until Redis answers, so a service fails fast (UNAVAILABLE) when it never does."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await client.ping()
            return
        except (RedisConnectionError, OSError) as error:
            if asyncio.get_running_loop().time() >= deadline:
                raise Unavailable(
                    "REDIS_UNAVAILABLE", f"Redis did not answer within {within:.0f}s: {error}"
                ) from error
            await asyncio.sleep(0.1)


def hash_tag(value: str) -> str:
    """`{value}`: keys carrying the same tag live in the same Cluster slot."""
    return "{" + value + "}"


def shard_of(member: str, shards: int) -> int:
    """A stable shard number for `member`, used to split big indexes across slots."""
    return zlib.crc32(member.encode()) % shards


def load_script(
    client: RedisClient, package: str, name: str, *, after: tuple[str, ...] = ()
) -> AsyncScript:
    """Registers the Lua script `package/<name>` (EVALSHA with a NOSCRIPT fallback).
    `after`: files of the same package whose local functions it uses, put before it
    (Redis scripts cannot load one another)."""
    files = resources.files(package)
    source = "\n".join(files.joinpath(part).read_text() for part in (*after, name))
    script: Any = client.register_script(source)
    SCRIPT_FILES[script.sha] = tuple(f"{package}/{part}" for part in (*after, name))
    return script


# The Lua files each loaded script is made of, by the SHA1 its EVALSHA names: what a
# run of the Cluster suite checks it executed every script file with (tests/conftest.py).
SCRIPT_FILES: dict[str, tuple[str, ...]] = {}
