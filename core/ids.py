"""Prefixed, time-ordered identifiers (`biz_01J…`).

The body is 48 bits of milliseconds, a 16-bit per-process counter and 64 random bits in Crockford base32, so
ids sort in creation order: lists page by id, oldest first, with the id itself as the cursor.
"""

from __future__ import annotations

import os
import secrets
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last_ms = 0
_counter = 0

PARTNER = "ptn"
API_KEY = "key"
BUSINESS = "biz"
CUSTOMER = "cus"
JOB = "job"
WEBHOOK_DELIVERY = "whd"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new id such as `cus_01JD3…`; later calls in one process sort after earlier ones."""
    global _last_ms, _counter
    with _lock:
        now = time.time_ns() // 1_000_000
        if now <= _last_ms:
            now = _last_ms
            _counter = (_counter + 1) & 0xFFFF
            if _counter == 0:  # 65 536 ids in one millisecond: borrow the next one
                now += 1
        else:
            _counter = int.from_bytes(os.urandom(1), "big")
        _last_ms = now
        body = (now << 80) | (_counter << 64) | secrets.randbits(64)
    return f"{prefix}_{_encode(body, 26)}"


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` new ids in order."""
    return [new_id(prefix) for _ in range(count)]
