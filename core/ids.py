"""Prefixed, time-ordered identifiers (`biz_01J…`).

The body is 26 Crockford base32 digits: 10 for the milliseconds (48 bits, two leading zero bits), 3 for a 15-bit
per-process counter, 13 random ones (65 bits). So ids sort in creation order: lists page by id, oldest first, with
the id itself as the cursor.

A worker makes an id for every record it creates, so this is on the hot path: the random digits are drawn from
the OS a few kilobytes at a time, turned into digits by one `bytes.translate` (256 is a multiple of 32, so every
digit is equally likely; the pool is dropped in a forked child, which must not reuse its parent's), and the
millisecond's digits are made once per millisecond.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every pair of digits, indexed by the 10 bits they encode.
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]
# A random byte to a random digit: its low 5 bits.
_TO_DIGIT = bytes(ord(_ALPHABET[b & 31]) for b in range(256))
_RANDOM_DIGITS = 13
_POOL_BYTES = 4095  # 315 ids' random digits
_COUNTER_LIMIT = 1 << 15
_lock = threading.Lock()
_last_ms = 0
_ms_digits = ""
_counter = 0
_pool = ""
_pool_at = 0

PARTNER = "ptn"
API_KEY = "key"
BUSINESS = "biz"
CUSTOMER = "cus"
JOB = "job"
WEBHOOK_DELIVERY = "whd"
OPERATOR = "opr"


def _forget_random() -> None:
    global _pool, _pool_at
    _pool, _pool_at = "", 0


os.register_at_fork(after_in_child=_forget_random)


def _encode(value: int, length: int) -> str:
    """The low `5 * length` bits of `value` as `length` Crockford base32 digits, most significant first."""
    if length % 2:
        return _encode(value >> 5, length - 1) + _ALPHABET[value & 31]
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(5 * length - 10, -1, -10)])


def new_id(prefix: str) -> str:
    """A new id such as `cus_01JD3…`; later calls in one process sort after earlier ones."""
    global _last_ms, _ms_digits, _counter, _pool, _pool_at
    with _lock:
        now = time.time_ns() // 1_000_000
        if now <= _last_ms:  # the same millisecond (or the clock went back): count on
            now = _last_ms
            _counter += 1
            if _counter == _COUNTER_LIMIT:  # 32 768 ids in one millisecond: borrow the next one
                now += 1
                _counter = os.urandom(1)[0]
        else:  # a new millisecond starts its counter anywhere below 256
            _counter = os.urandom(1)[0]
        if now != _last_ms:
            _last_ms, _ms_digits = now, _encode(now, 10)
        if _pool_at + _RANDOM_DIGITS > len(_pool):
            _pool, _pool_at = os.urandom(_POOL_BYTES).translate(_TO_DIGIT).decode(), 0
        start = _pool_at
        _pool_at += _RANDOM_DIGITS
        counter = _counter
        return f"{prefix}_{_ms_digits}{_PAIRS[counter >> 5]}{_ALPHABET[counter & 31]}{_pool[start:_pool_at]}"


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` new ids in order."""
    return [new_id(prefix) for _ in range(count)]
