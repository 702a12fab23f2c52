"""Prefixed, time-ordered identifiers (`biz_01J…`).

The body is 48 bits of milliseconds, a 16-bit per-process counter and 64 random bits in Crockford base32, so
ids sort in creation order: lists page by id, oldest first, with the id itself as the cursor.

A worker makes an id for every record it creates, so this is on the hot path: random bits are read from the OS a
few kilobytes at a time (and dropped in a forked child, which must not reuse its parent's), and the digits are
looked up two at a time.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every pair of digits, indexed by the 10 bits they encode.
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]
_RANDOM_POOL_BYTES = 4096
_lock = threading.Lock()
_last_ms = 0
_counter = 0
_random = b""
_random_at = 0

PARTNER = "ptn"
API_KEY = "key"
BUSINESS = "biz"
CUSTOMER = "cus"
JOB = "job"
WEBHOOK_DELIVERY = "whd"
OPERATOR = "opr"


def _forget_random() -> None:
    global _random, _random_at
    _random, _random_at = b"", 0


os.register_at_fork(after_in_child=_forget_random)


def _random_bytes(count: int) -> bytes:
    """`count` bytes from the OS's CSPRNG, buffered; call with `_lock` held."""
    global _random, _random_at
    if _random_at + count > len(_random):
        _random, _random_at = os.urandom(_RANDOM_POOL_BYTES), 0
    start = _random_at
    _random_at += count
    return _random[start:_random_at]


def _encode(value: int, length: int) -> str:
    """The low `5 * length` bits of `value` as `length` Crockford base32 digits, most significant first."""
    if length % 2:
        return _encode(value >> 5, length - 1) + _ALPHABET[value & 31]
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(5 * length - 10, -1, -10)])


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
            _counter = _random_bytes(1)[0]
        _last_ms = now
        body = (now << 80) | (_counter << 64) | int.from_bytes(_random_bytes(8), "big")
    return f"{prefix}_{_encode(body, 26)}"


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` new ids in order."""
    return [new_id(prefix) for _ in range(count)]
