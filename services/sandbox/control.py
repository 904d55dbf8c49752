"""The control API: HTTP/1.1 + JSON on loopback, for the CLI, the demo and other processes.

    GET    /info                         ports, CA file, demo credentials
    POST   /apns/keys                    {key_id, team_id, key_pem, environment?, topics?}
    POST   /apns/certificates            {bundle_id, environment?} -> {"pem": key + cert}
    PUT    /apns/tokens/{token}          {state, topic?, environment?, unregistered_at_ms?}
    POST   /fcm/service-accounts         service-account JSON (or public_key instead)
    PUT    /fcm/tokens/{token}           {state, project?}
    PUT    /fcm/quota/{project}          {per_minute}
    POST   /fcm/expire-access-tokens
    POST   /webpush/subscriptions        {application_server_key?} -> subscription
    PUT    /webpush/subscriptions/{id}   {state}
    GET    /limits                       rate limits in force, per service
    PUT    /apns/limits                  {device_per_minute?, device_per_hour?, token_update_penalty?}
    PUT    /fcm/limits                   {device_per_minute?, device_per_hour?}
    PUT    /webpush/limits               {subscription_per_minute?, vapid_key_per_minute?}
    GET    /faults    POST /faults {rule}    DELETE /faults    DELETE /faults/{id}
    GET    /received/{service}?token=&status=&since=&limit=
    GET    /counters[/{service}]
    POST   /reset

Errors are `{"error": "..."}` with 400 / 404.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from .faults import FaultRuleError, rule_from_json
from .h2server import Connection, Outcome, Request, Response

if TYPE_CHECKING:
    from .stack import SandboxStack


class _BadRequest(Exception):
    pass


class ControlApi:
    def __init__(self, stack: SandboxStack) -> None:
        self.stack = stack

    def handle(self, request: Request, conn: Connection) -> Outcome:
        url = urlsplit(request.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            body = json.loads(request.body) if request.body else {}
            if not isinstance(body, dict):
                raise _BadRequest("the body must be a JSON object")
            result = self._route(request.method, parts, query, body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _json(400, {"error": "the body must be JSON"})
        except (_BadRequest, FaultRuleError, ValueError, TypeError) as exc:
            return _json(400, {"error": str(exc)})
        except KeyError as exc:
            return _json(404, {"error": f"not found: {exc.args[0] if exc.args else ''}"})
        if result is None:
            return _json(404, {"error": f"no route for {request.method} {url.path}"})
        return _json(200, result)

    def _route(
        self, method: str, parts: list[str], query: dict[str, str], body: dict[str, Any]
    ) -> Any:
        stack = self.stack
        match (method, parts):
            case ("GET", ["info"]) | ("GET", []):
                return stack.info()
            case ("POST", ["apns", "keys"]):
                stack.apns.register_key(
                    _required(body, "key_id"),
                    _required(body, "team_id"),
                    _required(body, "key_pem"),
                    body.get("environment", "both"),
                    tuple(body.get("topics", ())),
                )
                return {"registered": body["key_id"]}
            case ("POST", ["apns", "certificates"]):
                pem = stack.apns_client_certificate(
                    _required(body, "bundle_id"), body.get("environment", "both")
                )
                return {"bundle_id": body["bundle_id"], "pem": pem.decode()}
            case ("PUT", ["apns", "tokens", token]):
                state = stack.apns.set_token(
                    token,
                    body.get("state", "active"),
                    body.get("topic"),
                    body.get("environment"),
                    body.get("unregistered_at_ms"),
                )
                return {"token": token, "state": state.state, "timestamp": state.unregistered_at_ms}
            case ("POST", ["fcm", "service-accounts"]):
                account = stack.fcm.register_service_account(body)
                return {"client_email": account.client_email, "project_id": account.project_id}
            case ("PUT", ["fcm", "tokens", token]):
                target = stack.fcm.set_token(
                    token, body.get("state", "active"), body.get("project")
                )
                return {"token": token, "state": target.state, "project": target.project}
            case ("PUT", ["fcm", "quota", project]):
                stack.fcm.set_quota(project, int(_required(body, "per_minute")))
                return {"project": project, "per_minute": int(body["per_minute"])}
            case ("POST", ["fcm", "expire-access-tokens"]):
                stack.fcm.expire_access_tokens()
                return {"expired": True}
            case ("POST", ["webpush", "subscriptions"]):
                return stack.webpush.create_subscription(body.get("application_server_key"))
            case ("PUT", ["webpush", "subscriptions", subscription_id]):
                stack.webpush.set_state(subscription_id, _required(body, "state"))
                return {"id": subscription_id, "state": body["state"]}
            case ("GET", ["limits"]):
                return stack.limits()
            case ("PUT", ["apns", "limits"]):
                return stack.apns.set_limits(
                    _optional_int(body, "device_per_minute"),
                    _optional_int(body, "device_per_hour"),
                    _optional_float(body, "token_update_penalty"),
                )
            case ("PUT", ["fcm", "limits"]):
                return stack.fcm.set_limits(
                    _optional_int(body, "device_per_minute"),
                    _optional_int(body, "device_per_hour"),
                )
            case ("PUT", ["webpush", "limits"]):
                return stack.webpush.set_limits(
                    _optional_int(body, "subscription_per_minute"),
                    _optional_int(body, "vapid_key_per_minute"),
                )
            case ("GET", ["faults"]):
                return [rule.to_json() for rule in stack.faults.list()]
            case ("POST", ["faults"]):
                return stack.faults.add(rule_from_json(body)).to_json()
            case ("DELETE", ["faults"]):
                stack.faults.clear()
                return {"cleared": True}
            case ("DELETE", ["faults", rule_id]):
                if not stack.faults.remove(rule_id):
                    raise KeyError(rule_id)
                return {"removed": rule_id}
            case ("GET", ["received", service]):
                return stack.received(
                    service,
                    token=query.get("token") or None,
                    status=int(query["status"]) if query.get("status") else None,
                    since_seq=int(query.get("since", 0)),
                    limit=int(query["limit"]) if query.get("limit") else None,
                )
            case ("GET", ["counters"]):
                return stack.counters()
            case ("GET", ["counters", service]):
                return stack.counters(service)
            case ("POST", ["reset"]):
                stack.reset()
                return {"reset": True}
        return None


def _required(body: dict[str, Any], name: str) -> Any:
    if body.get(name) in (None, ""):
        raise _BadRequest(f"{name} is required")
    return body[name]


def _optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    return None if value is None else int(value)


def _optional_float(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    return None if value is None else float(value)


def _json(status: int, data: Any) -> Response:
    return Response(
        status, [("content-type", "application/json")], json.dumps(data, default=str).encode()
    )
