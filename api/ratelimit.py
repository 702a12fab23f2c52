"""The request budget at the HTTP edge: 429 `rate_limited`, and the RateLimit fields on every authenticated answer.

The fields are those of draft-ietf-httpapi-ratelimit-headers (Structured Field lists): `RateLimit-Policy` names the
partner's policy, its quota `q` and window `w` in seconds; `RateLimit` what is left of it, `r`, and `t`, the
seconds until the oldest counted request leaves the window (as `Retry-After` on a 429).
"""

from __future__ import annotations

from starlette.types import Scope

from api.metrics import RATE_LIMIT_UNAVAILABLE
from core.errors import DomainError
from core.partners.budgets import POLICY, Spent

STATE_KEY = "rate_limit"


def check(scope: Scope, spent: Spent) -> None:
    """Remember the request's budget for its answer's headers; 429 when the budget is spent."""
    scope.setdefault("state", {})[STATE_KEY] = spent
    if not spent.counted and not spent.budget.unlimited:
        RATE_LIMIT_UNAVAILABLE.inc()
    if not spent.allowed:
        raise DomainError(
            "rate_limited",
            f"Over this API key's partner request budget ({spent.budget.quota} requests in "
            f"{spent.budget.window_seconds} s, {spent.budget.per_second}/s sustained). "
            f"Retry after {spent.reset_seconds} s.",
            429,
            headers={"Retry-After": str(spent.reset_seconds)},
        )


def headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The RateLimit fields for the answer to an authenticated request (none when its partner has no budget)."""
    spent: Spent | None = scope.get("state", {}).get(STATE_KEY)
    if spent is None or spent.budget.unlimited:
        return []
    budget = spent.budget
    fields = [(b"ratelimit-policy", f'"{POLICY}";q={budget.quota};w={budget.window_seconds}'.encode())]
    if spent.counted:  # Redis unreachable: the policy holds, but what is left of it is unknown
        fields.append((b"ratelimit", f'"{POLICY}";r={spent.remaining};t={spent.reset_seconds}'.encode()))
    return fields
