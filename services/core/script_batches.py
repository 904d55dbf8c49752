"""Many Lua script calls in one round trip, on a single Redis or a Cluster.

On a single Redis the calls are pipelined with EVALSHA queued by hand: a redis-py
pipeline that runs Script objects first asks SCRIPT EXISTS, one more round trip for
every batch. When Redis lost its scripts (a restart, SCRIPT FLUSH), the calls that
failed with NOSCRIPT did not run: the Script object loads the script and reruns just
those. On Redis Cluster, where redis-py refuses scripts in a pipeline, the calls run
concurrently (each to its keys' node; each call's keys must share a slot).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from services.core.redis import RedisClient

# (script from load_script, its keys, its arguments)
ScriptCall = tuple[Any, Sequence[Any], Sequence[Any]]


async def run_scripts(redis: RedisClient, calls: Sequence[ScriptCall]) -> list[Any]:
    """The results of `calls`, in their order; the first error raised."""
    if isinstance(redis, RedisCluster) or len(calls) == 1:
        return list(
            await asyncio.gather(
                *(script(keys=list(keys), args=list(args)) for script, keys, args in calls)
            )
        )
    pipe = redis.pipeline(transaction=False)
    for script, keys, args in calls:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    results = list(await pipe.execute(raise_on_error=False))
    for position, result in enumerate(results):
        if isinstance(result, NoScriptError):
            script, keys, args = calls[position]
            results[position] = await script(keys=list(keys), args=list(args))
        elif isinstance(result, Exception):
            raise result
    return results
