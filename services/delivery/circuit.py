"""A circuit breaker per (app, provider) for configuration failures.

A misconfigured app (revoked key, wrong topic, wrong Firebase project) fails every
send the same way; without a breaker a campaign would burn through its whole audience
and bury real outcomes. Credential-wide failures (a rejected key or certificate, a
disallowed topic) open the circuit at once; token-level configuration failures
(DeviceTokenNotForTopic, SENDER_ID_MISMATCH — one stray token can cause them) open it
after `token_threshold` in a row with no success between.

Open: sends are refused (RETRY, reason CIRCUIT_OPEN) until `open_until`. Then the
circuit is half-open: one send at a time goes through as a probe. A probe that
succeeds closes it; a probe that fails with a configuration error reopens it for twice
as long (up to `max_open_seconds`). Replacing the credential closes it (the new
version starts with a clean record).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

CircuitKey = tuple[str, str]  # (app_id, provider)


@dataclass
class _State:
    open_until: float = 0.0
    open_seconds: float = 0.0
    streak: int = 0
    probing: bool = False
    version: int = 0


class CircuitBreakers:
    def __init__(
        self, open_seconds: float = 30.0, max_open_seconds: float = 900.0, token_threshold: int = 5
    ) -> None:
        self.open_seconds = open_seconds
        self.max_open_seconds = max_open_seconds
        self.token_threshold = token_threshold
        self._states: dict[CircuitKey, _State] = {}

    def _state(self, key: CircuitKey, version: int) -> _State:
        state = self._states.get(key)
        if state is None or state.version != version:
            # A new credential version: forget what the old material did.
            state = self._states[key] = _State(version=version)
        return state

    def admit(self, key: CircuitKey, version: int, shared_until: float = 0.0) -> float:
        """0 when a send may go now (possibly as the half-open probe), else the seconds
        to wait. `shared_until` is the reopen time another process stored in Redis."""
        now = time.time()
        state = self._state(key, version)
        if shared_until > state.open_until:
            state.open_until = shared_until
            state.open_seconds = state.open_seconds or self.open_seconds
        if state.open_until == 0.0:
            return 0.0
        if now < state.open_until:
            return state.open_until - now
        if state.probing:
            return 1.0  # a probe is in flight; others wait for its verdict
        state.probing = True
        return 0.0

    def peek(self, key: CircuitKey, version: int, shared_until: float = 0.0) -> float:
        """Like admit() but without taking the half-open probe: seconds until a send may go."""
        state = self._state(key, version)
        until = max(state.open_until, shared_until)
        return max(0.0, until - time.time())

    def success(self, key: CircuitKey, version: int) -> None:
        state = self._state(key, version)
        state.open_until = 0.0
        state.open_seconds = 0.0
        state.streak = 0
        state.probing = False

    def neutral(self, key: CircuitKey, version: int) -> None:
        """An answer that says nothing about configuration (a 5xx, a timeout)."""
        self._state(key, version).probing = False

    def failure(self, key: CircuitKey, version: int, credential_wide: bool) -> float:
        """Count a configuration failure; returns the reopen time if the circuit opened."""
        now = time.time()
        state = self._state(key, version)
        state.streak += 1
        was_probe = state.probing
        state.probing = False
        if not (credential_wide or was_probe or state.streak >= self.token_threshold):
            return 0.0
        if was_probe or state.open_until:
            state.open_seconds = min(
                self.max_open_seconds, max(state.open_seconds, self.open_seconds) * 2
            )
        else:
            state.open_seconds = self.open_seconds
        state.open_until = now + state.open_seconds
        return state.open_until
