"""run_scripts: many script calls in one round trip, surviving Redis losing its scripts."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from services.core.script_batches import run_scripts

# Sets a key and answers what was there: a second run of the same call would answer
# differently, so results show whether a call ran once.
SWAP = "local old = redis.call('GET', KEYS[1]) redis.call('SET', KEYS[1], ARGV[1]) return old"
FAIL = "return redis.error_reply('BAD_CALL')"


async def test_results_come_in_call_order_and_each_call_runs_once(redis):
    swap = redis.register_script(SWAP)
    keys = [f"{{batch}}:k{n}" for n in range(5)]
    await redis.set(keys[2], "before")
    await redis.script_flush()  # the first batch finds no script loaded

    first = await run_scripts(redis, [(swap, [key], [f"v{n}"]) for n, key in enumerate(keys)])
    assert first == [None, None, b"before", None, None]
    second = await run_scripts(redis, [(swap, [key], ["again"]) for key in keys])
    assert second == [f"v{n}".encode() for n in range(5)]


async def test_a_failing_call_raises_its_error(redis):
    swap = redis.register_script(SWAP)
    fail = redis.register_script(FAIL)
    with pytest.raises(ResponseError, match="BAD_CALL"):
        await run_scripts(redis, [(swap, ["{batch}:a"], ["x"]), (fail, ["{batch}:b"], [])])
