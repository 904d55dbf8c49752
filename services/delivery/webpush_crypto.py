"""RFC 8291 message encryption (Content-Encoding: aes128gcm, one record).

Written against the RFC with `cryptography` rather than http_ece so the header layout
(salt | rs | idlen | the sender's 65-byte public key) and the size overhead are explicit.
"""

from __future__ import annotations

import base64
import hmac
import os
import struct
from hashlib import sha256

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

RECORD_SIZE = 4096
# header (16 salt + 4 rs + 1 idlen + 65 key) + 1 padding delimiter + 16 tag
OVERHEAD = 86 + 1 + 16


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encrypt(plaintext: bytes, p256dh: str, auth: str) -> bytes:
    receiver_raw = _b64url_decode(p256dh)
    receiver = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), receiver_raw)
    auth_secret = _b64url_decode(auth)
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    sender_raw = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    shared = ephemeral.exchange(ec.ECDH(), receiver)
    key_info = b"WebPush: info\x00" + receiver_raw + sender_raw
    ikm = HKDF(hashes.SHA256(), 32, salt=auth_secret, info=key_info).derive(shared)
    salt = os.urandom(16)
    prk = hmac.new(salt, ikm, sha256).digest()
    cek = HKDFExpand(hashes.SHA256(), 16, info=b"Content-Encoding: aes128gcm\x00").derive(prk)
    nonce = HKDFExpand(hashes.SHA256(), 12, info=b"Content-Encoding: nonce\x00").derive(prk)
    # One record: the plaintext, then the 0x02 delimiter that marks the last record.
    ciphertext = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)
    header = salt + struct.pack("!L", RECORD_SIZE) + bytes([len(sender_raw)]) + sender_raw
    return header + ciphertext
