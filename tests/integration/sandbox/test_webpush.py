"""pywebpush (and py_vapid + http_ece with httpx) against the Web Push sandbox."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import Any

import http_ece
import httpx
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from pywebpush import WebPushException, webpush

from services.sandbox import SandboxStack
from services.sandbox.pki import b64url_decode, new_vapid_key


async def push(sandbox: SandboxStack, subscription: dict[str, Any], data: str, **kw: Any):
    """pywebpush's one-call API, over requests in a thread (the sandbox shares this loop)."""
    creds = sandbox.credentials
    session = requests.Session()
    # requests lets REQUESTS_CA_BUNDLE from the environment override session.verify.
    session.trust_env = False
    session.verify = str(sandbox.ca_file)
    try:
        return await asyncio.to_thread(
            webpush,
            subscription,
            data,
            vapid_private_key=str(creds.vapid_private_key_file),
            vapid_claims={"sub": creds.vapid_subject},
            ttl=kw.pop("ttl", 60),
            timeout=5,
            requests_session=session,
            **kw,
        )
    finally:
        session.close()


def vapid_header(sandbox: SandboxStack, **claims: Any) -> str:
    vapid = Vapid.from_file(str(sandbox.credentials.vapid_private_key_file))
    full = {
        "sub": sandbox.credentials.vapid_subject,
        "aud": sandbox.webpush.origin,
        "exp": int(time.time()) + 3600,
        **claims,
    }
    return vapid.sign(full)["Authorization"]


def encrypt(subscription: dict[str, Any], plaintext: bytes) -> bytes:
    return http_ece.encrypt(
        plaintext,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=b64url_decode(subscription["keys"]["p256dh"]),
        auth_secret=b64url_decode(subscription["keys"]["auth"]),
        version="aes128gcm",
    )


@pytest.fixture
async def http(ca_context: ssl.SSLContext):
    async with httpx.AsyncClient(verify=ca_context, timeout=5) as client:
        yield client


async def test_pywebpush_message_is_decrypted_by_the_sandbox(sandbox):
    creds = sandbox.credentials
    subscription = sandbox.webpush.create_subscription(creds.vapid_public_key)
    text = json.dumps({"title": "Grüße", "body": "tu pedido ha llegado"})

    response = await push(sandbox, subscription, text, headers={"Urgency": "high"})

    assert response.status_code == 201
    assert response.headers["location"].startswith(f"{sandbox.webpush.origin}/m/")
    [entry] = sandbox.received("webpush", token=subscription["id"])
    assert entry["plaintext"] == text
    assert entry["payload"]["title"] == "Grüße"
    assert entry["vapid_public_key"] == creds.vapid_public_key
    assert (entry["ttl"], entry["urgency"], entry["reason"]) == (60, "high", None)


async def test_expired_and_unsubscribed_subscriptions(sandbox):
    expired = sandbox.webpush.create_subscription()
    gone = sandbox.webpush.create_subscription()
    sandbox.webpush.set_state(expired["id"], "expired")
    sandbox.webpush.set_state(gone["endpoint"], "unsubscribed")

    with pytest.raises(WebPushException) as not_found:
        await push(sandbox, expired, "hello")
    with pytest.raises(WebPushException) as unsubscribed:
        await push(sandbox, gone, "hello")

    assert not_found.value.response.status_code == 404
    assert unsubscribed.value.response.status_code == 410
    assert unsubscribed.value.response.json()["error"] == "Gone"


async def test_too_large_payload_answers_413(sandbox):
    subscription = sandbox.webpush.create_subscription()
    with pytest.raises(WebPushException) as too_large:
        await push(sandbox, subscription, "x" * 4050)
    assert too_large.value.response.status_code == 413


async def test_both_vapid_spellings_and_required_ttl(sandbox, http):
    subscription = sandbox.webpush.create_subscription()
    body = encrypt(subscription, b"spaced")
    header = vapid_header(sandbox)
    assert ",k=" in header  # py_vapid's spelling; other libraries put a space after ','
    base = {"content-encoding": "aes128gcm", "ttl": "0"}

    spaced = await http.post(
        subscription["endpoint"],
        content=body,
        headers={**base, "authorization": header.replace(",k=", ", k=")},
    )
    no_ttl = await http.post(
        subscription["endpoint"],
        content=body,
        headers={"content-encoding": "aes128gcm", "authorization": header},
    )
    bad_urgency = await http.post(
        subscription["endpoint"],
        content=body,
        headers={**base, "authorization": header, "urgency": "urgent"},
    )

    assert spaced.status_code == 201
    assert sandbox.received("webpush", token=subscription["id"])[0]["plaintext"] == "spaced"
    assert no_ttl.status_code == 400
    assert bad_urgency.status_code == 400


async def test_vapid_is_verified(sandbox, http):
    subscription = sandbox.webpush.create_subscription(sandbox.credentials.vapid_public_key)
    body = encrypt(subscription, b"x")
    headers = {"content-encoding": "aes128gcm", "ttl": "60"}

    missing = await http.post(subscription["endpoint"], content=body, headers=headers)
    wrong_audience = await http.post(
        subscription["endpoint"],
        content=body,
        headers={**headers, "authorization": vapid_header(sandbox, aud="https://push.example")},
    )
    too_far = await http.post(
        subscription["endpoint"],
        content=body,
        headers={
            **headers,
            "authorization": vapid_header(sandbox, exp=int(time.time()) + 48 * 3600),
        },
    )
    other_pem, _ = new_vapid_key()
    other_key = Vapid.from_pem(other_pem).sign(
        {"sub": "mailto:x@example.com", "aud": sandbox.webpush.origin, "exp": int(time.time()) + 60}
    )
    not_the_subscribed_key = await http.post(
        subscription["endpoint"],
        content=body,
        headers={**headers, "authorization": other_key["Authorization"]},
    )

    assert missing.status_code == 401
    assert wrong_audience.status_code == 401
    assert too_far.status_code == 401
    assert not_the_subscribed_key.status_code == 403


async def test_push_over_http2(sandbox, ca_context):
    subscription = sandbox.webpush.create_subscription()
    async with httpx.AsyncClient(http2=True, verify=ca_context, timeout=5) as h2_client:
        response = await h2_client.post(
            subscription["endpoint"],
            content=encrypt(subscription, "über HTTP/2".encode()),
            headers={
                "content-encoding": "aes128gcm",
                "ttl": "30",
                "topic": "order-42",
                "authorization": vapid_header(sandbox),
            },
        )
    assert (response.http_version, response.status_code) == ("HTTP/2", 201)
    [entry] = sandbox.received("webpush", token=subscription["id"])
    assert (entry["plaintext"], entry["topic"], entry["ttl"]) == ("über HTTP/2", "order-42", 30)


async def test_bad_topic_answers_400(sandbox, http):
    subscription = sandbox.webpush.create_subscription()
    response = await http.post(
        subscription["endpoint"],
        content=encrypt(subscription, b"x"),
        headers={
            "content-encoding": "aes128gcm",
            "ttl": "60",
            "topic": "t" * 33,  # at most 32 URL-safe base64 characters
            "authorization": vapid_header(sandbox),
        },
    )
    assert response.status_code == 400
    assert sandbox.received("webpush", token=subscription["id"])[0]["reason"] == "BadTopic"


async def test_cli_subscribes_and_unsubscribes_as_a_browser_would(sandbox):
    from .test_faults import cli

    code, out = await cli(
        sandbox, "subscribe", "--application-server-key", sandbox.credentials.vapid_public_key
    )
    assert code == 0
    subscription = json.loads(out)
    assert set(subscription["keys"]) == {"p256dh", "auth"}
    assert (await push(sandbox, subscription, "via the control API")).status_code == 201

    code, _ = await cli(
        sandbox, "subscription", subscription["endpoint"], "--state", "unsubscribed"
    )
    assert code == 0
    with pytest.raises(WebPushException) as gone:
        await push(sandbox, subscription, "again")
    assert gone.value.response.status_code == 410
