"""Operator passwords: scrypt from the standard library (hashlib), so hashing needs no package of its own.

A hash is stored with its parameters and salt, `scrypt$n=16384,r=8,p=5$<salt>$<key>` (base64), so the cost can
be raised later without invalidating the passwords hashed before. The parameters are OWASP's (16 MiB of memory per
check); a check takes about 0.2 s here, which only a sign-in pays (a session is checked by its token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
N, R, P = 2**14, 8, 5
KEY_BYTES = 32
SALT_BYTES = 16
# hashlib refuses parameters needing more than `maxmem`; 128 * n * r bytes is what these need, plus slack.
_MAX_MEMORY = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEMORY, dklen=KEY_BYTES)


def hash_password(password: str) -> str:
    """The stored form of a password: scheme, parameters, a fresh salt and the derived key."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, N, R, P)
    return f"{SCHEME}$n={N},r={R},p={P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches the stored hash (compared in constant time); False for a malformed hash."""
    try:
        scheme, params, salt, key = stored.split("$")
        values = dict(part.split("=", 1) for part in params.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        if scheme != SCHEME:
            return False
        return hmac.compare_digest(_derive(password, _unb64(salt), n, r, p), _unb64(key))
    except (ValueError, KeyError):
        return False


def new_password() -> str:
    """A generated password: 144 random bits, URL-safe (24 characters)."""
    return secrets.token_urlsafe(18)
