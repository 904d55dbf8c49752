"""Real Web Push subscription keys for tests: a browser's p256dh is a point on P-256,
and Herald refuses 65 bytes that are not one."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def p256dh() -> bytes:
    """A fresh uncompressed P-256 public key (65 bytes, 0x04 first)."""
    return (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
