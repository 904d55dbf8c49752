"""Small pure helpers every store and log line relies on."""

from __future__ import annotations

from services.core.logs import redact
from services.core.redis import hash_tag, shard_of


def test_redact_keeps_only_the_ends_of_a_token():
    token = "a" * 4 + "0123456789abcdef" * 3 + "zzzz"
    shown = redact(token)
    assert shown == "aaaa…zzzz"
    assert "0123456789" not in shown


def test_redact_hides_short_secrets_completely():
    assert redact("short") == "*****"


def test_hash_tags_group_keys_and_shards_are_stable_and_spread():
    assert hash_tag("app-1") == "{app-1}"
    assert shard_of("device-1", 64) == shard_of("device-1", 64)
    spread = {shard_of(f"device-{n}", 64) for n in range(2000)}
    assert len(spread) == 64
