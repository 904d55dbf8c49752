"""`make run`'s stack as a process: it starts everything, says where, and stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.core.embedded_redis import free_port
from tests.tls_files import issue, write

SERVICES = ("registration", "identity", "campaign", "delivery")


def test_the_stack_starts_every_service_prints_addresses_and_stops_on_ctrl_c(
    redis_server, tmp_path
):
    ports = {name: free_port() for name in SERVICES}
    env = _stack_env(redis_server.url, ports)
    for name in ("apns", "fcm", "webpush", "control"):
        env[f"HERALD_SANDBOX_{name.upper()}_PORT"] = str(free_port())
    process = _start_stack(env, tmp_path)
    try:
        deadline = time.monotonic() + 60
        for name, port in ports.items():
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while True:
                    try:
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                        break
                    except grpc.RpcError:
                        if process.poll() is not None or time.monotonic() >= deadline:
                            process.kill()
                            out, err = process.communicate()
                            raise AssertionError(
                                f"{name} never became healthy (stack exit code "
                                f"{process.returncode}):\n{out[-2000:]}\n{err[-4000:]}"
                            ) from None
                        time.sleep(0.2)
        time.sleep(0.5)  # the banner is printed once every service answered
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()  # closes the pipes whatever happened
    assert process.returncode == 0, stderr[-2000:]
    assert "Herald is running:" in stdout
    assert f"redis         {redis_server.url}" in stdout
    lines = stdout.splitlines()
    for name, port in ports.items():
        assert f"  {name:<13} 127.0.0.1:{port}" in lines
    assert (tmp_path / ".run" / "sandbox" / "ca.pem").exists()
    assert (tmp_path / ".run" / "credentials.key").stat().st_mode & 0o077 == 0
    assert stderr.rstrip().endswith("herald: stopped")


def test_a_service_that_cannot_start_fails_the_stack_at_once_naming_it(redis_server, tmp_path):
    ports = {name: free_port() for name in SERVICES}
    env = _stack_env(redis_server.url, ports)
    with socket.socket() as taken:  # Delivery's port, held by someone else
        taken.bind(("127.0.0.1", ports["delivery"]))
        taken.listen()
        started = time.monotonic()
        finished = subprocess.run(
            [sys.executable, "-m", "services.stack", "--no-sandboxes"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=110,  # under the stack's own per-service wait: it must not wait it out
            check=False,
        )
    assert finished.returncode == 1
    assert f"herald: delivery exited on 127.0.0.1:{ports['delivery']}" in finished.stderr
    assert "HERALD_DELIVERY_PORT: cannot listen" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert time.monotonic() - started < 110
    for name in ("registration", "identity", "campaign"):  # the others were stopped
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", ports[name])) != 0, name


def test_the_stack_with_tls_starts_over_tls_and_stops(redis_server, tmp_path):
    """HERALD_TLS_* set: every service listens with TLS, and the stack still sees each
    become healthy (it asks over TLS) and prints its banner."""
    ca = issue("herald-ca")
    write(tmp_path / "ca", ca[0], None)
    write(tmp_path / "tls", *issue("herald", ca, ("herald",)))
    ports = {name: free_port() for name in SERVICES}
    env = _stack_env(
        redis_server.url,
        ports,
        HERALD_TLS_CERT_FILE=str(tmp_path / "tls.crt"),
        HERALD_TLS_KEY_FILE=str(tmp_path / "tls.key"),
        HERALD_TLS_CA_FILE=str(tmp_path / "ca.crt"),
        HERALD_TLS_SERVER_NAME="herald",
    )
    process = _start_stack(env, tmp_path, "--no-sandboxes")
    try:
        banner = _read_until(process, "Press Ctrl-C to stop.", within=120)
        plain = grpc.insecure_channel(f"127.0.0.1:{ports['identity']}")
        with plain, pytest.raises(grpc.RpcError):  # TLS only: plaintext is not served
            health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=2)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    assert "Herald is running:" in banner
    assert process.returncode == 0, stderr[-2000:]


def _read_until(process: subprocess.Popen[str], line: str, within: float) -> str:
    """The stack's stdout up to `line`; fails with its output if it exits first."""
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = process.stdout.readline()
        if not got:
            process.kill()
            _, err = process.communicate()
            raise AssertionError(f"the stack exited:\n{''.join(seen)}\n{err[-4000:]}")
        seen.append(got)
        if got.strip() == line:
            return "".join(seen)
    raise AssertionError(f"no {line!r} in time:\n{''.join(seen)}")


def _stack_env(redis_url: str, ports: dict[str, int], **more: str) -> dict[str, str]:
    """This environment without Herald's variables, the test's Redis, each service on
    its port, and `more`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "REDIS_URL"))}
    env.update(REDIS_URL=redis_url, PYTHONPATH=os.getcwd(), **more)
    for name, port in ports.items():
        env[f"HERALD_{name.upper()}_PORT"] = str(port)
        env[f"HERALD_{name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
    return env


def _start_stack(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.stack", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
