"""Request budgets counted in the real Redis: the window that holds a burst, a partner's own budget beside the
default, one partner's spending not another's, a budget back once its window has passed, and failing open."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from core.config import settings
from core.partners import budgets
from core.partners.budgets import Budget, budget_of, spend


@pytest.mark.parametrize(
    ("per_second", "burst", "quota", "window"),
    [(100, 200, 200, 2), (20, 40, 40, 2), (10, 10, 10, 1), (100, 150, 150, 2), (100, 50, 100, 1), (3, 10, 10, 4)],
)
def test_a_burst_is_held_by_a_window_of_whole_seconds(per_second: int, burst: int, quota: int, window: int) -> None:
    budget = Budget(per_second=per_second, burst=burst)
    assert (budget.quota, budget.window_seconds) == (quota, window)
    # Never more than the sustained rate over a window, nor more than the burst at once.
    assert budget.quota / budget.window_seconds <= max(per_second, burst)
    assert budget.quota / budget.window_seconds <= per_second or budget.window_seconds == 1


def test_a_partners_own_budget_replaces_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "rate_limit_per_second", 100)
    monkeypatch.setattr(settings, "rate_limit_burst", 200)
    assert budget_of(None, None) == Budget(100, 200)
    assert budget_of(500, 800) == Budget(500, 800)
    assert budget_of(50, None) == Budget(50, 100)  # the default's ratio of burst to rate
    assert budget_of(0, None).unlimited
    monkeypatch.setattr(settings, "rate_limit_per_second", 0)
    assert budget_of(None, None).unlimited


def _partner() -> str:
    return f"ptn_budget_{uuid.uuid4().hex[:8]}"


def test_a_budget_admits_its_burst_then_refuses_until_its_window_has_passed() -> None:
    async def scenario() -> None:
        budget = Budget(per_second=5, burst=5)
        partner, other = _partner(), _partner()
        spent = [await spend(partner, budget) for _ in range(7)]
        assert [s.allowed for s in spent] == [True] * 5 + [False] * 2
        assert [s.remaining for s in spent[:5]] == [4, 3, 2, 1, 0]
        assert all(s.counted for s in spent)
        assert spent[-1].reset_seconds == 1
        assert (await spend(other, budget)).allowed  # another partner's budget is its own
        await asyncio.sleep(1.05)
        assert (await spend(partner, budget)).allowed

    asyncio.run(scenario())


def test_with_redis_unreachable_every_request_is_admitted_uncounted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "redis_url", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(budgets, "_counters", type(budgets._counters)())
    monkeypatch.setattr(budgets, "_skip_until", 0.0)

    async def scenario() -> None:
        spent = [await spend(_partner(), Budget(per_second=1, burst=1)) for _ in range(3)]
        assert all(s.allowed and not s.counted for s in spent)

    asyncio.run(scenario())
    assert budgets._skip_until > 0  # Redis is not asked again at once: the outage costs no request a timeout
