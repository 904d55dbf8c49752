"""The Dispatcher: one notification, one attempt, one AttemptResult.

The queue workers and the Send RPC call `deliver()`; it picks the credential, checks
the app's circuit, builds the provider request, sends it through the provider's pooled
sender, maps the answer through the action table, and performs the side effects the
table asks for (Registration.InvalidateTokens for DELETE_TOKEN, the circuit breaker
and the credential's last_error for QUARANTINE). It never sleeps between attempts:
`next_retry_delay_seconds` tells the caller when to call again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from herald.delivery.v1 import notification_pb2
from herald.type.v1 import push_options_pb2
from services.core.config import Settings
from services.core.errors import FailedPrecondition, FieldViolation, HeraldError, InvalidArgument
from services.core.redis import RedisClient
from services.delivery import actions, tokens
from services.delivery.actions import Action
from services.delivery.attempt import AttemptResult
from services.delivery.circuit import CircuitBreakers
from services.delivery.credential_cache import CredentialCache
from services.delivery.credential_store import CredentialStore
from services.delivery.credentials import ENVIRONMENT_NAMES, Credential, Slot
from services.delivery.metrics import DeliveryMetrics
from services.delivery.payloads import ProviderRequest, ttl_seconds
from services.delivery.payloads import apns as apns_payload
from services.delivery.payloads import fcm as fcm_payload
from services.delivery.payloads import webpush as webpush_payload
from services.delivery.registration import RegistrationClient
from services.delivery.sealing import Sealer
from services.delivery.senders import ProviderAnswer, Sender
from services.delivery.senders.apns import ApnsSender
from services.delivery.senders.fcm import FcmSender
from services.delivery.senders.webpush import WebPushSender
from services.delivery.transport.pool import H2Pool, PoolOptions

log = logging.getLogger(__name__)
OUTCOME = push_options_pb2
DEFAULT_SEND_TIMEOUT = 10.0
PAYLOAD = {"apns": "apns", "fcm": "fcm", "webpush": "web_push"}


@dataclass(frozen=True)
class Prepared:
    provider: str
    slot: Slot
    credential: Credential
    request: ProviderRequest
    origin: str


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        registration: RegistrationClient,
        *,
        pool_options: dict[str, PoolOptions] | None = None,
        circuit: CircuitBreakers | None = None,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        credential_refresh_seconds: float = 1.0,
    ) -> None:
        options = pool_options or {}
        self.settings = settings
        self.store = CredentialStore(redis, Sealer(settings.credentials_key))
        self.credentials = CredentialCache(self.store, credential_refresh_seconds)
        self.registration = registration
        self.circuit = circuit or CircuitBreakers()
        self.send_timeout = send_timeout
        self.apns = ApnsSender(settings, options.get("apns"))
        self.fcm = FcmSender(settings, options.get("fcm"))
        self.webpush = WebPushSender(settings, options.get("webpush"))
        self.senders: dict[str, Sender] = {
            "apns": self.apns,
            "fcm": self.fcm,
            "webpush": self.webpush,
        }
        self.metrics = DeliveryMetrics()  # no-op until use_metrics()

    def use_metrics(self, metrics: DeliveryMetrics) -> None:
        """Count attempts, GOAWAYs and provider tokens, and expose pool state as gauges
        read at scrape time (credential expiry is every stored credential's, not only
        those this process holds: metrics.ExpirySampler, registered by the servicer)."""
        self.metrics = metrics
        for sender in (self.apns, self.fcm, self.webpush):
            sender.on_event = metrics.event
        metrics.observe(
            "herald.delivery.pool.connections",
            "Open HTTP/2 connections, by provider",
            "1",
            lambda: self._pool_gauge(lambda pool: len(pool.connections)),
        )
        metrics.observe(
            "herald.delivery.pool.streams_in_use",
            "HTTP/2 streams in flight, by provider",
            "1",
            lambda: self._pool_gauge(lambda pool: sum(c.open_streams for c in pool.connections)),
        )

    def _pool_gauge(self, read: Callable[[H2Pool], int]) -> list[tuple[float, dict[str, str]]]:
        return [
            (float(sum(read(pool) for pool in sender.pools())), {"provider": name})
            for name, sender in (("apns", self.apns), ("fcm", self.fcm), ("webpush", self.webpush))
        ]

    # -- checks (Send and Enqueue reject bad input with these before queueing) ---------
    async def check(
        self, notification: notification_pb2.Notification, prefix: str = "notification."
    ) -> None:
        """What prepare() raises, without building the provider request: Enqueue checks
        each notification here and the request is built at each send (an APNs request
        carries its send's apns-id and expiration, a Web Push body its own encryption)."""
        provider, _, _ = await self._sendable(notification, prefix)
        if provider == "apns":
            apns_payload.check(notification, prefix)
        elif provider == "fcm":
            fcm_payload.check(notification, prefix)
        else:
            webpush_payload.check(notification, prefix)

    async def prepare(
        self, notification: notification_pb2.Notification, prefix: str = "notification."
    ) -> Prepared:
        """Validate and build the provider request. Raises InvalidArgument (INVALID_ARGUMENT,
        TOKEN_MALFORMED, PAYLOAD_TOO_LARGE) naming the field, or FailedPrecondition
        (CREDENTIALS_MISSING)."""
        provider, slot, credential = await self._sendable(notification, prefix)
        if provider == "apns":
            apns_id = str(uuid.uuid4())
            request = apns_payload.build(
                notification, credential.public["bundle_id"], apns_id, prefix
            )
            origin = self.apns.origin_for(slot.environment)
        elif provider == "fcm":
            request = fcm_payload.build(notification, credential.public["project_id"], prefix)
            origin = self.settings.fcm_origin
        else:
            request = webpush_payload.build(notification, prefix)
            url = urlsplit(notification.token.web_push.endpoint)
            origin = f"{url.scheme}://{url.netloc}"
        return Prepared(provider, slot, credential, request, origin)

    async def _sendable(
        self, notification: notification_pb2.Notification, prefix: str
    ) -> tuple[str, Slot, Credential]:
        """The provider, credential slot and credential of a notification whose target
        and payload kind are valid; raises naming the field, or CREDENTIALS_MISSING."""
        if not notification.app_id:
            raise InvalidArgument(
                "app_id is required", [FieldViolation(f"{prefix}app_id", "is required")]
            )
        tokens.check_token(notification.token, f"{prefix}token")
        provider = tokens.provider_of(notification.token)
        payload_field = PAYLOAD[provider]
        if not notification.HasField(payload_field):  # type: ignore[arg-type]
            raise InvalidArgument(
                f"a {provider} token needs the {payload_field} payload",
                [FieldViolation(f"{prefix}{payload_field}", f"is required for a {provider} token")],
            )
        slot = self._slot(notification, provider, prefix)
        credential = await self.credentials.get(slot)
        if credential is None:
            raise FailedPrecondition(
                "CREDENTIALS_MISSING",
                f"app {notification.app_id} has no {slot.name} credentials",
                {"app_id": notification.app_id, "provider": slot.name},
            )
        return provider, slot, credential

    def _slot(
        self, notification: notification_pb2.Notification, provider: str, prefix: str
    ) -> Slot:
        if provider != "apns":
            return Slot(notification.app_id, provider)
        environment = ENVIRONMENT_NAMES.get(notification.apns_environment, "")
        if not environment:
            raise InvalidArgument(
                "an APNs token needs its environment",
                [FieldViolation(f"{prefix}apns_environment", "is required for an APNs token")],
                reason=tokens.TOKEN_MALFORMED,
            )
        return Slot(notification.app_id, "apns", environment)

    def circuit_wait(self, prepared: Prepared) -> float:
        """Seconds until the app's circuit lets a send through (0: now); takes nothing."""
        key = (prepared.slot.app_id, prepared.provider)
        return self.circuit.peek(
            key, prepared.credential.version, prepared.credential.circuit_until
        )

    # -- one attempt --------------------------------------------------------------------
    async def deliver(
        self,
        notification: notification_pb2.Notification,
        attempt: int,
        *,
        time_limit: float | None = None,
    ) -> AttemptResult:
        """Send one attempt of `notification` (attempt counts from 1) and say what happened.
        Never raises for a provider or input problem: those are results."""
        result = await self._deliver(notification, attempt, time_limit)
        self.metrics.attempt(notification.app_id, result)
        return result

    async def _deliver(
        self,
        notification: notification_pb2.Notification,
        attempt: int,
        time_limit: float | None,
    ) -> AttemptResult:
        """Send one attempt of `notification` (attempt counts from 1) and say what happened.
        Never raises for a provider or input problem: those are results."""
        started = time.time()
        clock = time.monotonic()
        provider = tokens.provider_of(notification.token)
        expire_at = _expire_time(notification, started)

        def result(
            answer: ProviderAnswer,
            rule: actions.Rule,
            *,
            retry_after: float | None = None,
            retry_after_override: float | None = None,
            provider_time: float | None = None,
            invalidation: str = "",
        ) -> AttemptResult:
            return self._result(
                notification,
                attempt,
                provider,
                answer,
                rule,
                started,
                clock,
                expire_at,
                retry_after=retry_after,
                retry_after_override=retry_after_override,
                provider_time=provider_time,
                invalidation=invalidation,
            )

        if started > expire_at and attempt > 1:
            rule = actions.Rule(Action.FAIL, "the TTL passed before this attempt")
            return result(ProviderAnswer(0, "EXPIRED", error="the notification's TTL passed"), rule)
        try:
            prepared = await self.prepare(notification)
        except HeraldError as error:
            rule = actions.Rule(Action.FAIL, "Herald rejected the notification")
            return result(ProviderAnswer(0, error.reason, error=error.message), rule)
        except Exception as error:
            # Input Enqueue's checks let through and the request cannot be built from:
            # a final FAIL, not an exception that would have the item reclaimed and
            # retried until its record expires. The type only: the message may quote
            # the token.
            log.warning(
                "the provider request could not be built",
                extra={"notification_id": notification.notification_id},
                exc_info=False,
            )
            rule = actions.Rule(Action.FAIL, "Herald could not build the provider request")
            answer = ProviderAnswer(0, "REQUEST_NOT_BUILT", error=type(error).__name__)
            return result(answer, rule)
        provider = prepared.provider
        key = (notification.app_id, provider)
        wait = self.circuit.admit(
            key, prepared.credential.version, prepared.credential.circuit_until
        )
        if wait > 0:
            rule = actions.Rule(Action.RETRY, "the app's circuit is open")
            answer = ProviderAnswer(
                0,
                "CIRCUIT_OPEN",
                error=prepared.credential.last_error or "configuration errors opened the circuit",
            )
            return result(answer, rule, retry_after=wait)

        answer = await self.senders[provider].send(
            prepared.credential, prepared.request, prepared.origin, time_limit or self.send_timeout
        )
        rule = actions.decide(provider, answer.status, answer.reason, answer.violations)
        invalidation = ""
        provider_time = answer.provider_time
        version = prepared.credential.version
        if rule.action is Action.DELIVERED:
            self.circuit.success(key, version)
        elif rule.action is Action.QUARANTINE:
            until = self.circuit.failure(key, version, rule.credential_wide)
            await self.store.record_error(
                prepared.slot, version, answer.reason or str(answer.status), until
            )
            log.warning(
                "configuration alert: %s answered %s %s for app %s; %s",
                provider,
                answer.status,
                answer.reason,
                notification.app_id,
                "circuit opened" if until else "circuit still closed",
                extra={
                    "alert": "credentials",
                    "app_id": notification.app_id,
                    "provider": provider,
                    "reason": answer.reason,
                },
            )
            self.credentials.invalidate(prepared.slot)
            if rule.credential_wide and until:
                return result(answer, rule, retry_after_override=until - time.time())
        else:
            self.circuit.neutral(key, version)
        if rule.action is Action.DELETE_TOKEN:
            provider_time = provider_time or time.time()
            invalidation = await self.registration.invalidate(
                notification.app_id,
                notification.token,
                provider,
                answer.reason or str(answer.status),
                provider_time,
                notification.device_id,
                notification.notification_id,
            )
        return result(answer, rule, provider_time=provider_time, invalidation=invalidation)

    def _result(
        self,
        notification: notification_pb2.Notification,
        attempt: int,
        provider: str,
        answer: ProviderAnswer,
        rule: actions.Rule,
        started: float,
        clock: float,
        expire_at: float,
        *,
        retry_after: float | None = None,
        retry_after_override: float | None = None,
        provider_time: float | None = None,
        invalidation: str = "",
    ) -> AttemptResult:
        now = time.time()
        action = rule.action
        outcome_reason = answer.reason
        next_delay: float | None = None
        wants_retry = action is Action.RETRY or retry_after_override is not None
        if wants_retry:
            if retry_after_override is not None:
                delay = retry_after_override
            elif retry_after is not None:
                delay = retry_after
            else:
                delay = actions.retry_delay(rule, attempt, answer.retry_after)
            if now + delay <= expire_at:
                next_delay = max(0.0, delay)
        if next_delay is not None:
            outcome = OUTCOME.DELIVERY_OUTCOME_RETRYING
        elif wants_retry:
            outcome, outcome_reason = OUTCOME.DELIVERY_OUTCOME_FAILED, "EXPIRED"
        elif action is Action.DELIVERED:
            outcome = OUTCOME.DELIVERY_OUTCOME_DELIVERED
        elif action is Action.DELETE_TOKEN:
            outcome = OUTCOME.DELIVERY_OUTCOME_TOKEN_INVALID
        else:
            outcome = OUTCOME.DELIVERY_OUTCOME_FAILED
        return AttemptResult(
            notification_id=notification.notification_id,
            attempt=attempt,
            action=action,
            outcome=outcome,
            provider=provider,
            status=answer.status,
            reason=answer.reason,
            outcome_reason=outcome_reason,
            provider_id=answer.provider_id,
            provider_time=provider_time,
            retry_after_seconds=answer.retry_after,
            next_retry_delay_seconds=next_delay,
            latency_ms=(time.monotonic() - clock) * 1000,
            connection_id=answer.connection_id,
            error=answer.error,
            start_time=started,
            invalidation=invalidation,
        )

    async def close(self) -> None:
        for sender in self.senders.values():
            await sender.close()


def _expire_time(notification: notification_pb2.Notification, now: float) -> float:
    """create_time + ttl (the contract's default TTL is 28 days; 0 means now or never)."""
    created = (
        notification.create_time.ToNanoseconds() / 1e9
        if notification.HasField("create_time")
        else now
    )
    return created + ttl_seconds(notification)
