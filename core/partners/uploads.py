"""Upload slots: at most PFSYNC_MAX_CONCURRENT_UPLOADS_PER_PARTNER batch uploads of a partner in progress at once,
counted in Redis so that every API process sees the same count (SPEC §7).

A slot is a member of the partner's sorted set, scored with the time its lease runs out; the holder renews the
lease while its upload goes on, and a process that dies mid-upload leaves a slot that expires by itself. The
script runs atomically in Redis, on Redis's clock, so processes on hosts with skewed clocks agree.
"""

from __future__ import annotations

import logging
import secrets

import redis.asyncio
import redis.exceptions

from core.ops.broker import broker_url

log = logging.getLogger(__name__)

LEASE_MS = 60_000
RENEW_SECONDS = 15.0

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) - now}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return {1, 0}
"""
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""


def _key(partner_id: str) -> str:
    return f"pfsync:uploads:{partner_id}"


class UploadSlot:
    """One upload's claim on its partner's slots; `acquire` says whether it got one.

    Redis unreachable: the upload goes ahead (failing open, logged), since refusing every upload for it would turn
    a broker blip into an outage of batch sync.
    """

    def __init__(self, partner_id: str, limit: int) -> None:
        self.partner_id = partner_id
        self.limit = limit
        self.token = secrets.token_hex(8)
        self.held = False
        self._client: redis.asyncio.Redis | None = None

    async def acquire(self) -> float | None:
        """None when the slot is ours (or Redis is unreachable); else seconds until a slot may free up."""
        try:
            self._client = redis.asyncio.Redis.from_url(broker_url(), socket_timeout=2, socket_connect_timeout=2)
            got, wait_ms = await self._client.eval(_ACQUIRE, 1, _key(self.partner_id), self.limit, LEASE_MS, self.token)
        except (redis.exceptions.RedisError, OSError, RuntimeError) as exc:
            log.warning("upload slots unavailable, admitting the upload: %s", exc)
            return None
        if not got:
            return max(1.0, int(wait_ms) / 1000)
        self.held = True
        return None

    async def renew(self) -> None:
        """Extend the lease (called while the upload goes on)."""
        if not self.held or self._client is None:
            return
        try:
            await self._client.eval(_RENEW, 1, _key(self.partner_id), LEASE_MS, self.token)
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("could not renew an upload slot: %s", exc)

    async def release(self) -> None:
        """Give the slot back and close the connection."""
        if self._client is None:
            return
        try:
            if self.held:
                await self._client.zrem(_key(self.partner_id), self.token)
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("could not release an upload slot (it expires by itself): %s", exc)
        finally:
            self.held = False
            await self._client.aclose()
            self._client = None
