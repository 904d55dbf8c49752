"""Notification ids: random (version 4) UUIDs in their canonical text form, made in bulk.

Enqueue names up to 1,000 notifications per call; `uuid.uuid4()` per id (an os.urandom
call, a UUID object, its str) was about a tenth of Enqueue's CPU. One urandom read per
batch, formatted directly, gives the same ids.
"""

from __future__ import annotations

import os

_VARIANT = "89ab89ab89ab89ab"  # the RFC 4122 variant: the top two bits of that digit are 10


def new_ids(count: int) -> list[str]:
    """`count` distinct random UUIDs, e.g. '0f8c5a8e-1c2d-4e3f-9a0b-1c2d3e4f5a6b'."""
    digits = os.urandom(16 * count).hex()
    ids = []
    for start in range(0, 32 * count, 32):
        h = digits[start : start + 32]
        variant = _VARIANT[int(h[16], 16)]
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return ids
