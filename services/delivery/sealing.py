"""Credentials at rest: AES-256-GCM under Settings.credentials_key.

The associated data binds a sealed blob to its slot (app id, provider, environment): a
ciphertext copied to another app's key does not decrypt there, so a Redis write that
moves blobs around cannot make one app send with another app's credentials.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.core.config import ConfigError

_FORMAT = b"\x01"  # leaves room for key rotation (a key id byte) later
_NONCE_BYTES = 12


class SealError(Exception):
    """A sealed blob that does not open with this key and slot."""


class Sealer:
    def __init__(self, base64_key: str) -> None:
        if not base64_key:
            # A start-up problem, not a request's: the process stops with this message.
            raise ConfigError(
                "HERALD_CREDENTIALS_KEY is not set: Delivery needs it to encrypt provider "
                "credentials (base64 of 32 random bytes)"
            )
        self._aead = AESGCM(base64.b64decode(base64_key))

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT + nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        if not sealed.startswith(_FORMAT) or len(sealed) < 1 + _NONCE_BYTES + 16:
            raise SealError("unknown sealed format")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], associated)
        except InvalidTag:
            raise SealError("sealed credentials do not open with this key and slot") from None


def slot_aad(app_id: str, provider: str, environment: str) -> bytes:
    return f"herald-credentials|{app_id}|{provider}|{environment}".encode()
