"""The batch read's shard and key agree with the ones every other path uses."""

from __future__ import annotations

import pytest

from services.identity import keys


@pytest.mark.parametrize("external_id", ["u1", "kim", "Zoë 🚀", "x" * 255, "a:{b}"])
def test_user_shard_and_key_match_user_shard_and_user(external_id):
    assert keys.user_shard_and_key(external_id) == (
        keys.user_shard(external_id),
        keys.user(external_id).encode(),
    )


def test_user_shard_and_key_spreads_ids_over_every_shard():
    shards = {keys.user_shard_and_key(f"user-{n}")[0] for n in range(2000)}
    assert shards == set(range(keys.USER_SHARDS))
