"""Each service as a real process: configuration failures, health, UNIMPLEMENTED, SIGTERM."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.core.embedded_redis import free_port
from services.stack import wait_listening, wait_serving

SERVICES = ("registration", "identity", "campaign", "delivery")


def _environment(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "REDIS_URL"))}
    env.update(
        {
            "REDIS_URL": redis_url,
            "HERALD_LOG_FORMAT": "json",
            "HERALD_CREDENTIALS_KEY": base64.b64encode(os.urandom(32)).decode(),
            **extra,
        }
    )
    return env


@pytest.mark.parametrize("service", SERVICES)
def test_a_bad_setting_stops_the_service_at_start_with_the_variable_named(service, redis_server):
    env = _environment(redis_server.url, **{f"HERALD_{service.upper()}_PORT": "not-a-port"})
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"HERALD_{service.upper()}_PORT: Input should be a valid integer" in done.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_serves_health_and_stops_cleanly_on_sigterm(service, redis_server):
    port = free_port()
    env = _environment(redis_server.url, **{f"HERALD_{service.upper()}_PORT": str(port)})
    process = subprocess.Popen(
        [sys.executable, "-m", f"services.{service}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_serving(f"127.0.0.1:{port}", timeout=30)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()  # closes the pipes whatever happened
    assert process.returncode == 0, stderr
    messages = [line for line in stderr.splitlines() if line.startswith("{")]
    assert any('"message": "serving"' in line for line in messages)
    assert any('"message": "shutting down"' in line for line in messages)
    assert '"message": "stopped"' in messages[-1]


def test_several_processes_share_the_port_and_stop_together(redis_server):
    port = free_port()
    env = _environment(redis_server.url, HERALD_IDENTITY_PORT=str(port), HERALD_PROCESSES="2")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "services.identity"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_serving(f"127.0.0.1:{port}", timeout=30)
        workers = _children_of(supervisor.pid)
        assert len(workers) == 2
        for worker in range(2):  # each worker serves its metrics on the gRPC port + 1000 + n
            assert wait_listening(port + 1000 + worker, timeout=30)
        supervisor.send_signal(signal.SIGTERM)
        _, stderr = supervisor.communicate(timeout=30)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        supervisor.communicate()
    assert supervisor.returncode == 0, stderr
    assert stderr.count('"message": "stopped"') == 2


def test_a_second_server_on_a_taken_port_fails_instead_of_sharing_it(redis_server):
    port = free_port()
    env = _environment(redis_server.url, HERALD_IDENTITY_PORT=str(port))
    first = subprocess.Popen(
        [sys.executable, "-m", "services.identity"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_serving(f"127.0.0.1:{port}", timeout=30)
        second = subprocess.run(
            [sys.executable, "-m", "services.identity"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        first.terminate()
        first.wait(timeout=30)
    assert second.returncode == 2
    assert f"HERALD_IDENTITY_PORT: cannot listen on 127.0.0.1:{port}" in second.stderr


def _children_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def test_delivery_without_a_credentials_key_stops_at_start_and_says_why(redis_server):
    env = _environment(redis_server.url, HERALD_DELIVERY_PORT=str(free_port()))
    del env["HERALD_CREDENTIALS_KEY"]
    done = subprocess.run(
        [sys.executable, "-m", "services.delivery"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "herald-delivery: HERALD_CREDENTIALS_KEY is not set" in done.stderr


def test_a_service_without_redis_says_so_in_one_line_and_exits_1():
    closed = free_port()  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-m", "services.identity"],
        env=_environment(f"redis://:s3cret-password@127.0.0.1:{closed}/0"),
        capture_output=True,
        text=True,
        timeout=90,  # the service waits 10 s for Redis
        check=False,
    )
    assert done.returncode == 1
    assert "herald-identity: REDIS_UNAVAILABLE: Redis did not answer within 10s" in done.stderr
    assert f"127.0.0.1:{closed}" in done.stderr
    assert "Traceback" not in done.stderr
    assert "s3cret-password" not in done.stderr
