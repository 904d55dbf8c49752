"""Failure injection, as the real clients observe it, from the Python API and the CLI."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import httpx
import pytest
from aioapns import NotificationRequest

from services.sandbox import SandboxStack
from services.sandbox.apns import new_device_token

from .conftest import fcm_token, send_path
from .test_apns import send

pytestmark = pytest.mark.usefixtures("sandbox")


async def fcm_send(client: httpx.AsyncClient, sandbox: SandboxStack, token: str) -> httpx.Response:
    return await client.post(send_path(sandbox), json={"message": {"token": token}})


async def test_injected_status_reason_and_retry_after(apns_client, sandbox, fcm):
    device = new_device_token()
    sandbox.faults.add(service="apns", token=device, status=503, reason="Shutdown")
    registration = fcm_token()
    sandbox.faults.add(service="fcm", token=registration, status=429, retry_after=30)

    apns_result = await send(apns_client(), NotificationRequest(device, {"aps": {}}))
    fcm_response = await fcm_send(fcm, sandbox, registration)

    assert (apns_result.status, apns_result.description) == ("503", "Shutdown")
    assert fcm_response.status_code == 429
    assert fcm_response.headers["retry-after"] == "30"
    assert fcm_response.json()["error"]["details"][0]["errorCode"] == "QUOTA_EXCEEDED"
    assert sandbox.counters("apns")["503 Shutdown"] == 1


async def test_nth_request_rule_fires_once(apns_client, sandbox):
    sandbox.faults.add(service="apns", nth=3, status=500)
    client = apns_client()
    token = new_device_token()

    statuses = [
        (await send(client, NotificationRequest(token, {"aps": {}}))).status for _ in "12345"
    ]

    assert statuses == ["200", "200", "500", "200", "200"]


async def test_goaway_with_last_stream_id_is_seen_by_httpx(sandbox, fcm):
    warm, retried, lost = fcm_token(), fcm_token(), fcm_token()
    await fcm_send(fcm, sandbox, warm)  # stream 1 on this connection
    # Stream 3 is refused with last_stream_id=1: not processed, so httpx retries it on a
    # new connection, exactly as it does against Google.
    sandbox.faults.add(service="fcm", token=retried, action="goaway", times=1)
    response = await fcm_send(fcm, sandbox, retried)
    assert response.status_code == 200
    assert sandbox.counters("fcm")["injected goaway"] == 1

    # A GOAWAY whose last_stream_id covers the request says it was taken, yet no answer
    # comes: the client sees the connection terminated, with that last_stream_id.
    sandbox.faults.add(
        service="fcm", token=lost, action="goaway", last_stream_id=2**31 - 1, error_code=2
    )
    with pytest.raises(httpx.RemoteProtocolError, match=r"error_code:2, last_stream_id:2147483647"):
        await fcm_send(fcm, sandbox, lost)


async def test_goaway_mid_burst_processes_exactly_the_streams_it_claims(sandbox, fcm):
    warm_up = await fcm_send(fcm, sandbox, fcm_token())  # one connection, streams open
    assert warm_up.status_code == 200
    since = sandbox.received("fcm")[-1]["seq"]
    sandbox.faults.add(service="fcm", nth=5, action="goaway", times=1)
    tokens = [fcm_token() for _ in range(40)]

    async def attempt(token: str) -> int | str:
        try:
            return (await fcm_send(fcm, sandbox, token)).status_code
        except httpx.RemoteProtocolError as error:
            return str(error)

    outcomes = dict(zip(tokens, await asyncio.gather(*map(attempt, tokens)), strict=True))

    # httpx resends streams above last_stream_id that it had not finished writing, and
    # fails those it was still writing when the GOAWAY arrived ("ConnectionTerminated").
    # Whatever the client saw, the sandbox processed exactly the requests it answered:
    # a failed one was not taken (safe to resend), an answered one was taken once.
    accepted = Counter(e["token"] for e in sandbox.received("fcm", status=200, since_seq=since))
    assert {t for t, o in outcomes.items() if o == 200} == set(accepted)
    assert set(accepted.values()) == {1}
    failures = {o for o in outcomes.values() if o != 200}
    assert all("ConnectionTerminated" in str(f) for f in failures)
    assert sandbox.counters("fcm")["injected goaway"] == 1


async def test_goaway_makes_aioapns_resend_on_a_new_connection(apns_client, sandbox):
    client = apns_client()
    token = new_device_token()
    assert (await send(client, NotificationRequest(token, {"aps": {"n": 1}}))).status == "200"
    sandbox.faults.add(service="apns", nth=1, action="goaway", reason="Shutdown")

    result = await send(client, NotificationRequest(token, {"aps": {"n": 2}}))

    assert result.status == "200"
    connections = {entry["connection"] for entry in sandbox.received("apns", token=token)}
    assert len(connections) == 2


async def test_rst_stream(sandbox, fcm, apns_client):
    registration = fcm_token()
    sandbox.faults.add(service="fcm", token=registration, action="rst_stream", error_code=7)
    with pytest.raises(httpx.RemoteProtocolError, match="StreamReset"):
        await fcm_send(fcm, sandbox, registration)

    # aioapns never gives up on a reset stream (documented in PROVIDERS.md): only the
    # caller's timeout ends the wait.
    device = new_device_token()
    sandbox.faults.add(service="apns", token=device, action="rst_stream")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            apns_client().send_notification(NotificationRequest(device, {"aps": {}})), 0.5
        )


async def test_dropped_connection(sandbox, fcm, ca_context):
    registration = fcm_token()
    sandbox.faults.add(service="fcm", token=registration, action="drop")
    with pytest.raises(httpx.RemoteProtocolError):
        await fcm_send(fcm, sandbox, registration)

    subscription = sandbox.webpush.create_subscription()
    sandbox.faults.add(service="webpush", token=subscription["id"], action="drop")
    async with httpx.AsyncClient(verify=ca_context, timeout=5) as http11:
        with pytest.raises(httpx.RemoteProtocolError, match="disconnected"):
            await http11.post(subscription["endpoint"], headers={"ttl": "0"})


async def test_slow_answer_times_out_the_client(sandbox, fcm):
    registration = fcm_token()
    sandbox.faults.add(service="fcm", token=registration, delay=1.0)

    with pytest.raises(httpx.ReadTimeout):
        await fcm.post(send_path(sandbox), json={"message": {"token": registration}}, timeout=0.2)
    # The slow request was still processed, as a real slow server would.
    await asyncio.sleep(1.0)
    assert sandbox.received("fcm", token=registration)[0]["status"] == 200


async def test_web_push_429_with_retry_after(sandbox, ca_context):
    subscription = sandbox.webpush.create_subscription()
    sandbox.faults.add(service="webpush", token=subscription["id"], status=429, retry_after=120)
    async with httpx.AsyncClient(verify=ca_context, timeout=5) as http11:
        response = await http11.post(subscription["endpoint"], headers={"ttl": "0"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "120"


async def cli(sandbox: SandboxStack, *args: str) -> tuple[int, str]:
    # Not subprocess.run: the control API the CLI talks to is served by this event loop.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.sandbox",
        "--control",
        sandbox.control_url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, (out or err).decode()


async def test_cli_scripts_faults_and_reads_back(sandbox, apns_client):
    device = new_device_token()
    code, out = await cli(
        sandbox, "fault", "add", "--service", "apns", "--token", device, "--status", "410"
    )
    assert code == 0, out
    assert json.loads(out)["reason"] is None

    result = await send(apns_client(), NotificationRequest(device, {"aps": {"alert": "cli"}}))
    assert (result.status, result.description) == ("410", "Unregistered")

    code, out = await cli(sandbox, "received", "apns", "--token", device)
    assert [entry["status"] for entry in json.loads(out)] == [410]
    code, out = await cli(sandbox, "counters", "apns")
    assert json.loads(out)["410 Unregistered"] == 1
    code, out = await cli(sandbox, "fault", "add", "--service", "apns", "--action", "status")
    assert code == 1
    assert "needs a status" in out


async def test_cli_issues_an_apns_certificate(sandbox):
    code, out = await cli(sandbox, "apns-certificate", "dev.herald.demo")
    assert code == 0, out
    pem = json.loads(out)["pem"]
    assert "BEGIN PRIVATE KEY" in pem
    assert "BEGIN CERTIFICATE" in pem


async def test_cli_goaway_with_last_stream_id(sandbox, fcm):
    lost = fcm_token()
    code, out = await cli(
        sandbox,
        # --token=: a token may begin with "-", which argparse would take for an option
        *("fault", "add", "--service", "fcm", f"--token={lost}", "--action", "goaway"),
        *("--last-stream-id", str(2**31 - 1), "--error-code", "2"),
    )
    assert code == 0, out
    assert json.loads(out)["last_stream_id"] == 2**31 - 1

    with pytest.raises(httpx.RemoteProtocolError, match=r"error_code:2, last_stream_id:2147483647"):
        await fcm_send(fcm, sandbox, lost)
    assert sandbox.counters("fcm")["injected goaway"] == 1


async def test_cli_delay_slows_the_answer(sandbox, fcm):
    slow = fcm_token()
    code, out = await cli(
        sandbox, "fault", "add", "--service", "any", f"--token={slow}", "--delay", "0.6"
    )
    assert code == 0, out

    with pytest.raises(httpx.ReadTimeout):
        await fcm.post(send_path(sandbox), json={"message": {"token": slow}}, timeout=0.2)
    started = asyncio.get_running_loop().time()
    answered = await fcm_send(fcm, sandbox, slow)  # the rule keeps firing (no --nth/--times)
    assert answered.status_code == 200
    assert asyncio.get_running_loop().time() - started >= 0.5


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--service", "apns", "--status", "503", "--reason", "Shutdown", "--retry-after", "9"],
            {"action": "status", "status": 503, "reason": "Shutdown", "retry_after": 9},
        ),
        (["--service", "fcm", "--status", "500", "--nth", "3"], {"status": 500, "nth": 3}),
        (
            ["--service", "apns", "--action", "goaway", "--last-stream-id", "5"],
            {"action": "goaway", "last_stream_id": 5, "error_code": 0},
        ),
        (
            ["--service", "fcm", "--action", "rst_stream", "--error-code", "7"],
            {"action": "rst_stream", "error_code": 7},
        ),
        (["--service", "webpush", "--action", "drop", "--times", "2"], {"action": "drop"}),
        (
            ["--service", "any", "--delay", "1.5", "--token", "t"],
            {"action": "pass", "delay": 1.5, "token": "t"},
        ),
    ],
)
def test_cli_fault_options_cover_every_kind(argv, expected):
    """Every fault kind and field the rules have can be written on the command line."""
    from services.sandbox.__main__ import _parser, _request
    from services.sandbox.faults import rule_from_json

    method, path, body = _request(_parser().parse_args(["fault", "add", *argv]))
    rule = rule_from_json(body or {}).to_json()

    assert (method, path) == ("POST", "/faults")
    assert {name: rule[name] for name in expected} == expected
