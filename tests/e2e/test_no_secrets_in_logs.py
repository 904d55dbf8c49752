"""Secrets never reach a log line or the CLI's output: the whole stack as processes
(`make run`) at DEBUG, with keys required, driven by the `herald` CLI through an app,
its API key, APNs credentials, a device with its token and the app's client secret, a
push, its trace and a refused call with a wrong key. Afterwards neither the services'
logs nor any CLI output but the one answer that creates each secret holds one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.core.embedded_redis import free_port
from services.sandbox.apns import new_device_token
from services.stack import wait_serving

SERVICES = ("registration", "identity", "campaign", "delivery")
ADMIN = "admin-" + "A1b2" * 10
INTERNAL = "internal-" + "I9z8" * 10


def _herald(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _secret_parts(text: str) -> list[str]:
    """The lines of a PEM body: any one of them in a log would leak the key."""
    return [line for line in text.splitlines() if line and not line.startswith("-----")]


@pytest.mark.timeout(300)  # five processes start and a dozen CLI runs, on a shared machine
def test_no_secret_or_full_token_in_any_log_line_or_cli_output(
    redis_server: Any, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in SERVICES}
    env: dict[str, Any] = {
        k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "REDIS_URL"))
    }
    env.update(
        {
            "REDIS_URL": redis_server.url,
            "PYTHONPATH": os.getcwd(),
            "HERALD_LOG_LEVEL": "DEBUG",
            "HERALD_LOG_FORMAT": "json",
            "HERALD_REQUIRE_API_KEYS": "true",
            "HERALD_ADMIN_KEY": ADMIN,
            "HERALD_INTERNAL_KEY": INTERNAL,
            "HERALD_API_KEY_CACHE_SECONDS": "0",
        }
    )
    for name, port in ports.items():
        env[f"HERALD_{name.upper()}_PORT"] = str(port)
        env[f"HERALD_{name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
    for name in ("apns", "fcm", "webpush", "control"):
        env[f"HERALD_SANDBOX_{name.upper()}_PORT"] = str(free_port())
    # Files, not pipes: at DEBUG the services write more than a pipe holds, and a full
    # pipe would block their logging (and so their event loops) until the end.
    out_file, log_file = tmp_path / "stack.out", tmp_path / "stack.log"
    with out_file.open("w") as out, log_file.open("w") as log:
        stack = subprocess.Popen(
            [sys.executable, "-m", "services.stack"], cwd=tmp_path, env=env, stdout=out, stderr=log
        )
    outputs: list[str] = []  # every CLI output that must hold no secret
    try:
        for port in ports.values():
            assert wait_serving(f"127.0.0.1:{port}", timeout=120)
        credentials = tmp_path / ".run" / "sandbox" / "credentials"
        demo = json.loads((credentials / "demo.json").read_text())
        p8 = next(credentials.glob("AuthKey_*.p8"))
        # The CLI takes the admin key from the environment the services read too.
        cli = {k: v for k, v in env.items() if k != "HERALD_LOG_LEVEL"}

        app = _herald(cli, "--json", "apps", "create", "--id", "shop", "--name", "Shop")
        assert app.returncode == 0, app.stderr
        client_secret = app.stdout and json.loads(app.stdout)["client_secret"]
        key = _herald(cli, "--json", "keys", "create", "shop", "--name", "be", "--scope", "full")
        assert key.returncode == 0, key.stderr
        api_key = json.loads(key.stdout)["key"]
        backend = {**cli, "HERALD_API_KEY": api_key, "HERALD_ADMIN_KEY": ""}
        token = new_device_token()

        steps = [
            ("credentials", "put-apns", "shop", "--key", str(p8), "--key-id",
             demo["apns_key_id"], "--team-id", demo["apns_team_id"], "--bundle-id",
             demo["apns_bundle_id"], "--environment", "development"),
            ("users", "upsert", "kim", "--attr", "first_name=Kim"),
            ("devices", "register", "shop", "phone-1", "--platform", "ios", "--os-version",
             "17.4", "--environment", "development", "--authorization", "authorized",
             "--apns-token", token, "--user-id", "kim", "--client-secret", client_secret),
            ("devices", "get", "shop", "phone-1"),
            ("--json", "devices", "list", "shop"),
        ]  # fmt: skip
        for step in steps:
            done = _herald(backend, *step)
            assert done.returncode == 0, (step, done.stderr)
            outputs += [done.stdout, done.stderr]
        sent = _herald(
            backend, "--json", "send", "shop", "--user", "kim", "--title", "Hi", "--body", "x"
        )
        assert sent.returncode == 0, sent.stderr
        (result,) = json.loads(sent.stdout)["results"]
        assert result["outcome"] == "DELIVERY_OUTCOME_DELIVERED"
        traced = _herald(backend, "trace", result["notification_id"])
        assert traced.returncode == 0, traced.stderr
        # Right after the push, with the app's own key: its attempt span, token redacted.
        assert "delivery.attempt" in traced.stdout
        assert f"token={token[:4]}…{token[-4:]}" in traced.stdout
        wrong = _herald(
            {**backend, "HERALD_API_KEY": api_key[:-4] + "zzzz"},
            "devices",
            "get",
            "shop",
            "phone-1",
        )
        assert wrong.returncode == 1, wrong.stderr
        assert "API_KEY_INVALID" in wrong.stderr
        outputs += [
            sent.stdout,
            sent.stderr,
            traced.stdout,
            traced.stderr,
            wrong.stdout,
            wrong.stderr,
        ]
    finally:
        if stack.poll() is None:
            stack.send_signal(signal.SIGINT)
        try:
            stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stack.kill()
            stack.wait()
    stdout, logs = out_file.read_text(), log_file.read_text()
    assert stack.returncode == 0, logs[-2000:]

    assert '"level": "DEBUG"' in logs  # the most talkative level ran
    credentials_key = (tmp_path / ".run" / "credentials.key").read_text().strip()
    secrets = {
        "admin key": ADMIN,
        "internal key": INTERNAL,
        "API key": api_key,
        "wrong API key": api_key[:-4] + "zzzz",
        "client secret": client_secret,
        "credentials key": credentials_key,
        "device token": token,
        **{f"APNs key line {i}": part for i, part in enumerate(_secret_parts(p8.read_text()))},
    }
    for where, text in {"logs": logs + stdout, "CLI output": "\n".join(outputs)}.items():
        leaked = [
            f"{name}: {line.replace(value, '<' + name + '>')[:300]}"
            for name, value in secrets.items()
            if value
            for line in text.splitlines()
            if value in line
        ]
        assert not leaked, f"{where} hold secrets:\n" + "\n".join(leaked)
        # Nor a provider's bearer token (the APNs JWT Delivery signs with the key above).
        assert "bearer ey" not in text.lower(), where
