"""The embedded redis-server never shares a port with another Redis."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from redis import Redis

from services.core.embedded_redis import CLUSTER_BUS_OFFSET, EmbeddedRedis, PortTaken, free_port


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


def _listen(port: int) -> socket.socket:
    """Something that is not Redis holding `port`, as an outgoing connection or another
    program might between our choice of the port and redis-server binding it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


def test_a_port_we_chose_that_is_taken_before_start_is_chosen_again(tmp_path):
    server = EmbeddedRedis(tmp_path / "moved")
    taken = server.port
    with _listen(taken):
        server.start()
        try:
            assert server.port != taken
            with Redis(port=server.port) as client:
                assert client.ping()
        finally:
            server.stop()


def test_a_cluster_node_whose_bus_port_is_taken_moves_to_a_port_whose_bus_is_free(tmp_path):
    node = EmbeddedRedis(tmp_path / "node", extra=["--cluster-enabled", "yes"])
    taken_bus = node.port + CLUSTER_BUS_OFFSET
    with _listen(taken_bus):
        node.start()
        try:
            assert node.port + CLUSTER_BUS_OFFSET != taken_bus
            with Redis(port=node.port) as client:
                assert client.info("cluster")["cluster_enabled"] == 1
        finally:
            node.stop()


def test_a_named_port_that_is_taken_fails_plainly_and_leaves_nothing_running(tmp_path):
    with _listen(free_port()) as holder:
        port = holder.getsockname()[1]
        named = EmbeddedRedis(tmp_path / "named", port=port)
        with pytest.raises(PortTaken, match="Address already in use"):
            named.start()
        assert named.process is None
        assert named.port == port


def test_cluster_ports_and_their_bus_ports_lie_below_the_ephemeral_range():
    start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(20):
        port = free_port(bus_offset=CLUSTER_BUS_OFFSET)
        assert port + CLUSTER_BUS_OFFSET < start
