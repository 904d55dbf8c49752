"""The embedded redis-server never shares a port with another Redis."""

from __future__ import annotations

import pytest

from services.core.embedded_redis import EmbeddedRedis


def test_starting_on_a_port_another_redis_serves_fails_plainly(redis_server, tmp_path):
    clash = EmbeddedRedis(tmp_path / "clash", port=redis_server.port)
    with pytest.raises(RuntimeError, match=f"port {redis_server.port} already serves a Redis"):
        clash.start()
    assert clash.process is None


def test_a_started_redis_is_our_own_process_and_stops(tmp_path):
    server = EmbeddedRedis(tmp_path / "own").start()
    try:
        assert server.process is not None
        assert server.process.poll() is None
    finally:
        server.stop()
    assert server.process is None
