"""Request budgets: how many requests each partner may make, counted in Redis for every API process (SPEC §8).

A budget of R requests a second with bursts of B is kept as a moving window of B requests over B/R seconds
(rounded up to whole seconds, at least one): a partner idle for the window may send B at once, and one that keeps
sending gets R a second. The counting is `limits`' moving window, an atomic Lua script in Redis; a refused request
takes nothing from the budget, so a client that retries too early only waits longer if it keeps retrying.

Redis unreachable: requests are not refused for it (failing open). The failure is logged, at most every few
seconds, and for a second after one the budget is not asked again, so an outage costs no request a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from dataclasses import dataclass

import redis.exceptions
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from core.config import NotConfigured, settings
from core.ops.broker import broker_url

log = logging.getLogger(__name__)

# The policy's name in the RateLimit fields: one budget, per partner.
POLICY = "partner"
KEY_PREFIX = "pfsync:budget"
REDIS_TIMEOUT_SECONDS = 0.5
# After Redis failed, requests are admitted without asking it for this long.
SKIP_AFTER_FAILURE_SECONDS = 1.0
LOG_EVERY_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Budget:
    """A request budget: `per_second` sustained, bursts of up to `burst`; `per_second == 0` is no limit."""

    per_second: int
    burst: int

    @property
    def unlimited(self) -> bool:
        return self.per_second <= 0

    @property
    def window_seconds(self) -> int:
        """The moving window that holds a burst: BURST/PER_SECOND seconds, rounded up, at least one."""
        return max(1, math.ceil(self.quota / self.per_second))

    @property
    def quota(self) -> int:
        """Requests allowed in one window: the burst (never less than one second's worth)."""
        return max(self.burst, self.per_second)


def default_budget() -> Budget:
    return Budget(per_second=settings.rate_limit_per_second, burst=settings.rate_limit_burst)


def budget_of(per_second: int | None, burst: int | None) -> Budget:
    """A partner's budget from its own settings (`pfsync partner budget`); what it leaves unset is the default."""
    default = default_budget()
    if per_second is None:
        per_second = default.per_second
        burst = default.burst if burst is None else burst
    elif burst is None:
        # A partner's own rate with no burst of its own keeps the default's ratio of burst to rate.
        ratio = default.burst / default.per_second if default.per_second else 2
        burst = math.ceil(per_second * max(ratio, 1))
    return Budget(per_second=per_second, burst=burst)


@dataclass(frozen=True, slots=True)
class Spent:
    """What a request did to its partner's budget. `counted` is False when Redis could not be asked."""

    allowed: bool
    budget: Budget
    counted: bool = True
    remaining: int = 0
    # Seconds until the oldest request in the window leaves it, giving one request back.
    reset_seconds: int = 0


class _Counter:
    """The rate limiter of one event loop (redis-py's asyncio connections belong to the loop that made them)."""

    def __init__(self) -> None:
        storage = RedisStorage(
            "async+" + broker_url(),
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=KEY_PREFIX,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self.limiter = MovingWindowRateLimiter(storage)


_counters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Counter] = weakref.WeakKeyDictionary()
_skip_until = 0.0
_logged_at = 0.0


def _counter() -> _Counter:
    loop = asyncio.get_running_loop()
    counter = _counters.get(loop)
    if counter is None:
        counter = _counters[loop] = _Counter()
    return counter


def _item(budget: Budget) -> RateLimitItem:
    return RateLimitItemPerSecond(budget.quota, budget.window_seconds)


async def spend(partner_id: str, budget: Budget) -> Spent:
    """Take one request from the partner's budget, if it has one left; never raises."""
    global _skip_until, _logged_at
    if budget.unlimited:
        return Spent(allowed=True, budget=budget, counted=False)
    now = time.monotonic()
    if now < _skip_until:
        return Spent(allowed=True, budget=budget, counted=False)
    item = _item(budget)
    try:
        limiter = _counter().limiter
        allowed = await limiter.hit(item, partner_id)
        stats = await limiter.get_window_stats(item, partner_id)
    except (StorageError, redis.exceptions.RedisError, OSError, NotConfigured) as exc:
        _skip_until = now + SKIP_AFTER_FAILURE_SECONDS
        if now - _logged_at >= LOG_EVERY_SECONDS:
            _logged_at = now
            log.warning("request budgets unavailable (Redis unreachable), admitting requests: %s", exc)
        return Spent(allowed=True, budget=budget, counted=False)
    reset = max(0, math.ceil(stats.reset_time - time.time()))
    return Spent(
        allowed=allowed,
        budget=budget,
        remaining=max(0, stats.remaining),
        reset_seconds=max(1, reset) if not allowed else reset,
    )
