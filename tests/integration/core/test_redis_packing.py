"""Commands packed by hiredis: the same bytes redis-py would send, and the same errors."""

from __future__ import annotations

import enum

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from services.core.config import Settings
from services.core.redis import connect, packed_by_hiredis


class Level(enum.IntEnum):
    HIGH = 10


COMMANDS = [
    ("SET", "key", "value", "NX", "EX", 86400),
    ("EVALSHA", "a" * 40, 2, b"{t}:k1", "{t}:k2", 1.5, -7, 2**70, "é✓", b"\x00\xff", b""),
    ("ZADD", "z", float("inf"), "m", 0.30000000000000004, "n"),
    ("XADD", "s", "*", "i", memoryview(b"id"), "a", 1),
    ("CONFIG GET", "maxmemory"),  # a two-word name: redis-py splits it
    ("SET", "k", Level.HIGH),  # an int subclass: redis-py's own conversion
    ("SET", "k", memoryview(b"abcd")[::2]),  # strided: the elements, not the buffer
    ("SET", "k", memoryview(b"abcd")[::-1]),
    ("SET", "k", bytearray(b"ab")),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: str(args[0]))
@pytest.mark.parametrize("base", [Connection, SSLConnection, UnixDomainSocketConnection])
def test_the_bytes_are_redis_pys(args, base):
    ours = packed_by_hiredis(base)()
    assert issubclass(type(ours), base)

    def sent(chunks: list) -> bytes:  # redis-py hands big or viewed values on as views
        return b"".join(bytes(chunk) for chunk in chunks)

    assert sent(ours.pack_command(*args)) == sent(base().pack_command(*args))


@pytest.mark.parametrize("bad", [None, True, [1], {"a": 1}])
def test_what_redis_py_refuses_is_refused_the_same_way(bad):
    with pytest.raises(DataError, match="Convert to a bytes, string, int or float first"):
        packed_by_hiredis(Connection)().pack_command("SET", "k", bad)


async def test_the_services_client_packs_with_hiredis_and_round_trips(settings: Settings):
    if settings.redis_cluster:
        pytest.skip("the cluster client keeps redis-py's packing")
    client = connect(settings)
    assert isinstance(client, Redis)
    try:
        assert client.connection_pool.connection_class.__name__.startswith("HiredisPacking")
        values = {f"{{rt}}:k{n}": "é✓".encode() * n + bytes([n]) for n in range(200)}
        pipe = client.pipeline(transaction=False)
        for key, value in values.items():
            pipe.set(key, value, ex=60)
        assert await pipe.execute() == [True] * 200
        assert await client.mget(list(values)) == list(values.values())
        assert await client.eval("return ARGV[1] .. ARGV[2]", 0, 1.5, -3) == b"1.5-3"
    finally:
        await client.aclose()
