"""google-auth (service-account token flow) and httpx over HTTP/2 against the FCM sandbox."""

from __future__ import annotations

import json

import google.auth.exceptions
import google.auth.transport.requests
import httpx
import pytest
from google.oauth2 import service_account

from services.sandbox.pki import new_service_account

from .conftest import SCOPE, fcm_token, fetch_access_token, send_path

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


async def test_token_flow_and_send_over_http2(sandbox, fcm, access_token):
    token = fcm_token()
    message = {
        "token": token,
        "data": {"campaign": "spring"},
        "notification": {"title": "Hola", "body": "¿Qué tal?"},
        "android": {"priority": "HIGH", "ttl": "3.5s", "collapse_key": "news"},
    }

    response = await fcm.post(send_path(sandbox), json={"message": message})

    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    name = response.json()["name"]
    assert name.startswith(f"projects/{sandbox.credentials.fcm_project_id}/messages/")
    [entry] = sandbox.received("fcm", token=token)
    assert entry["name"] == name
    assert entry["message"]["notification"]["body"] == "¿Qué tal?"
    assert entry["client_email"].endswith(".iam.gserviceaccount.com")
    assert access_token.startswith("ya29.")


async def test_http11_and_validate_only(sandbox, ca_context, access_token):
    async with httpx.AsyncClient(verify=ca_context, timeout=5) as client:
        response = await client.post(
            f"https://127.0.0.1:{sandbox.fcm_port}{send_path(sandbox)}",
            headers={"authorization": f"Bearer {access_token}"},
            json={"validate_only": True, "message": {"topic": "news", "data": {"a": "b"}}},
        )
    assert response.http_version == "HTTP/1.1"
    assert response.json() == {
        "name": f"projects/{sandbox.credentials.fcm_project_id}/messages/fake_message_id"
    }


async def test_fcm_error_codes_come_back_as_documented(sandbox, fcm):
    unregistered, foreign, apns_routed = fcm_token(), fcm_token(), fcm_token()
    sandbox.fcm.set_token(unregistered, "unregistered")
    sandbox.fcm.set_token(foreign, project="someone-elses-project")
    sandbox.fcm.set_token(apns_routed, "third_party_auth_error")
    unavailable, internal = fcm_token(), fcm_token()
    sandbox.faults.add(service="fcm", token=unavailable, status=503)
    sandbox.faults.add(service="fcm", token=internal, status=500)
    expected = {
        unregistered: (404, "NOT_FOUND", "UNREGISTERED"),
        foreign: (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
        apns_routed: (401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"),
        unavailable: (503, "UNAVAILABLE", "UNAVAILABLE"),
        internal: (500, "INTERNAL", "INTERNAL"),
    }
    for token, (code, status, error_code) in expected.items():
        response = await fcm.post(send_path(sandbox), json={"message": {"token": token}})
        error = response.json()["error"]
        assert response.status_code == code
        assert (error["code"], error["status"]) == (code, status)
        assert error["details"] == [{"@type": FCM_ERROR, "errorCode": error_code}]
        assert error["message"]


async def test_invalid_argument_names_the_field(sandbox, fcm):
    cases = {
        "message.android.ttl": {"token": fcm_token(), "android": {"ttl": "10m"}},
        "message.data[count].value": {"token": fcm_token(), "data": {"count": 3}},
        "message": {"token": fcm_token(), "topic": "news"},
    }
    for field, message in cases.items():
        response = await fcm.post(send_path(sandbox), json={"message": message})
        error = response.json()["error"]
        assert response.status_code == 400
        assert error["status"] == "INVALID_ARGUMENT"
        assert error["details"][0] == {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"}
        violations = error["details"][1]["fieldViolations"]
        assert violations[0]["field"] == field

    reserved = await fcm.post(
        send_path(sandbox), json={"message": {"token": fcm_token(), "data": {"from": "x"}}}
    )
    assert "Invalid data payload key: from" in reserved.text
    too_long = await fcm.post(
        send_path(sandbox),
        json={"message": {"token": fcm_token(), "android": {"ttl": "2419201s"}}},
    )
    assert too_long.status_code == 400
    too_big = await fcm.post(
        send_path(sandbox), json={"message": {"token": fcm_token(), "data": {"x": "y" * 4100}}}
    )
    assert too_big.status_code == 400
    assert too_big.json()["error"]["status"] == "INVALID_ARGUMENT"


async def test_quota_bucket_answers_429_with_retry_after(sandbox, fcm):
    sandbox.fcm.set_quota(sandbox.credentials.fcm_project_id, per_minute=2)
    statuses = []
    for _ in range(3):
        response = await fcm.post(send_path(sandbox), json={"message": {"token": fcm_token()}})
        statuses.append(response.status_code)

    assert statuses == [200, 200, 429]
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["details"][0]["errorCode"] == "QUOTA_EXCEEDED"


async def test_bad_and_expired_access_tokens_answer_401(sandbox, fcm):
    forged = await fcm.post(
        send_path(sandbox),
        json={"message": {"token": fcm_token()}},
        headers={"authorization": "Bearer ya29.forged"},
    )
    assert forged.status_code == 401
    assert forged.json()["error"]["status"] == "UNAUTHENTICATED"

    sandbox.fcm.expire_access_tokens()
    expired = await fcm.post(send_path(sandbox), json={"message": {"token": fcm_token()}})
    assert expired.status_code == 401


async def test_unknown_service_account_is_refused_by_the_token_endpoint(sandbox, tmp_path):
    stranger = new_service_account("stranger-project", sandbox.fcm.token_uri)
    path = tmp_path / "stranger.json"
    path.write_text(json.dumps(stranger))
    credentials = service_account.Credentials.from_service_account_file(str(path), scopes=[SCOPE])

    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant"):
        await fetch_access_token(credentials, str(sandbox.ca_file))

    sandbox.fcm.register_service_account(stranger)
    assert await fetch_access_token(credentials, str(sandbox.ca_file))
