"""The action table, backoff, circuit breaker, token signers and sealing (no sockets)."""

from __future__ import annotations

import base64
import os
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.delivery import actions
from services.delivery.actions import Action
from services.delivery.circuit import CircuitBreakers
from services.delivery.sealing import Sealer, SealError, slot_aad
from services.delivery.senders.apns_jwt import ApnsTokenSigner
from services.delivery.senders.vapid import VapidSigner


def test_table_is_versioned_and_never_deletes_for_configuration_errors():
    assert actions.ACTION_TABLE_VERSION == "2026-11-1"
    for provider, reason in [
        ("apns", "DeviceTokenNotForTopic"),
        ("apns", "TopicDisallowed"),
        ("fcm", "SENDER_ID_MISMATCH"),
        ("fcm", "THIRD_PARTY_AUTH_ERROR"),
    ]:
        assert actions.decide(provider, 400, reason).action is Action.QUARANTINE
    assert actions.decide("webpush", 403, "403").action is Action.QUARANTINE
    for _, _, _, rule in actions.all_rows():
        assert isinstance(rule.action, Action)


def test_unknown_answers_fall_back_by_status():
    assert actions.decide("apns", 500, "SomethingNew").action is Action.RETRY
    assert actions.decide("apns", 400, "SomethingNew").action is Action.FAIL
    assert actions.decide("fcm", 502, "HTTP 502").action is Action.RETRY
    assert actions.decide("fcm", 404, "HTTP 404").action is Action.FAIL
    assert actions.decide("webpush", 418, "418").action is Action.FAIL
    assert actions.decide("apns", 0, "GOAWAY").action is Action.RETRY


def test_retry_delay_honours_retry_after_floors_and_jitter():
    internal = actions.FCM["INTERNAL"]
    assert actions.retry_delay(internal, 1, None) >= 10
    assert actions.retry_delay(actions.FCM["QUOTA_EXCEEDED"], 1, None) == 60
    assert actions.retry_delay(actions.APNS["TooManyRequests"], 1, 5) == 5
    delays = [actions.backoff_seconds(4) for _ in range(200)]
    assert min(delays) >= 0
    assert max(delays) <= 8
    assert len({round(d, 3) for d in delays}) > 50  # full jitter, not a fixed schedule


def test_circuit_opens_half_opens_and_closes():
    breakers = CircuitBreakers(open_seconds=0.05, token_threshold=3)
    key = ("app", "apns")
    assert breakers.failure(key, 1, credential_wide=False) == 0  # one stray token: still closed
    assert breakers.failure(key, 1, credential_wide=False) == 0
    assert breakers.failure(key, 1, credential_wide=False) > 0  # third in a row: open
    assert breakers.admit(key, 1) > 0
    time.sleep(0.06)
    assert breakers.admit(key, 1) == 0  # the probe
    assert breakers.admit(key, 1) > 0  # others wait for its verdict
    breakers.success(key, 1)
    assert breakers.admit(key, 1) == 0
    assert breakers.failure(key, 1, credential_wide=True) > 0
    assert breakers.admit(key, 2) == 0  # a new credential version starts closed


def test_apns_token_is_minted_once_per_window():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    signer = ApnsTokenSigner(pem, "ABCDEFGHIJ", "TEAM123456")
    first = signer.authorization(now=1000)
    assert signer.authorization(now=1000 + 39 * 60) == first
    assert signer.authorization(now=1000 + 40 * 60) != first
    assert signer.mints == 2
    claims = jwt.decode(first.removeprefix("bearer "), key.public_key(), algorithms=["ES256"])
    assert claims == {"iss": "TEAM123456", "iat": 1000}
    assert jwt.get_unverified_header(first.removeprefix("bearer "))["kid"] == "ABCDEFGHIJ"


def test_vapid_header_per_origin():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    signer = VapidSigner(pem, "PUBKEY", "mailto:ops@example.com")
    header = signer.authorization("https://push.example", now=time.time())
    assert header.endswith(", k=PUBKEY")
    token = header.removeprefix("vapid t=").split(",")[0]
    claims = jwt.decode(
        token, key.public_key(), algorithms=["ES256"], audience="https://push.example"
    )
    assert claims["sub"] == "mailto:ops@example.com"
    assert claims["exp"] - time.time() <= 24 * 3600
    assert signer.authorization("https://push.example") == header


def test_sealing_binds_the_slot():
    sealer = Sealer(base64.b64encode(os.urandom(32)).decode())
    blob = sealer.seal(b"secret", slot_aad("a", "apns", "production"))
    assert b"secret" not in blob
    assert sealer.open(blob, slot_aad("a", "apns", "production")) == b"secret"
    with pytest.raises(SealError):
        sealer.open(blob, slot_aad("b", "apns", "production"))
