"""Upload slots counted in the real Redis: a partner's limit holds across holders, a slot given back or lapsed is
free again, and one partner's slots are not another's."""

from __future__ import annotations

import asyncio

import redis

from core.partners import uploads
from core.partners.uploads import UploadSlot
from tests.conftest import REDIS_URL


async def _take(partner_id: str, count: int, limit: int) -> tuple[list[UploadSlot], list[float | None]]:
    slots = [UploadSlot(partner_id, limit) for _ in range(count)]
    return slots, [await slot.acquire() for slot in slots]


def test_a_partner_holds_at_most_its_limit_and_a_released_slot_is_free_again() -> None:
    async def scenario() -> None:
        slots, answers = await _take("ptn_slots_a", 3, limit=2)
        assert answers[:2] == [None, None]
        refused = answers[2]  # refused, with a time to retry
        assert refused is not None
        assert refused >= 1
        other, other_answers = await _take("ptn_slots_b", 2, limit=2)  # another partner's slots are its own
        assert other_answers == [None, None]
        await slots[0].release()
        again = UploadSlot("ptn_slots_a", 2)
        assert await again.acquire() is None
        for slot in [*slots[1:], again, *other]:
            await slot.release()

    asyncio.run(scenario())


def test_a_slot_whose_holder_died_lapses_with_its_lease(monkeypatch) -> None:
    monkeypatch.setattr(uploads, "LEASE_MS", 200)

    async def scenario() -> None:
        held, answers = await _take("ptn_slots_c", 1, limit=1)
        assert answers == [None]
        refused = UploadSlot("ptn_slots_c", 1)
        assert await refused.acquire() is not None
        await refused.release()
        await asyncio.sleep(0.3)  # the holder never renewed nor released
        later = UploadSlot("ptn_slots_c", 1)
        assert await later.acquire() is None
        await later.release()
        held[0].held = False
        await held[0].release()

    asyncio.run(scenario())
    assert redis.Redis.from_url(REDIS_URL).zcard("pfsync:uploads:ptn_slots_c") == 0


def test_uploads_go_ahead_when_redis_cannot_be_reached(monkeypatch) -> None:
    from core.config import settings

    monkeypatch.setattr(settings, "redis_url", "redis://127.0.0.1:1/0")

    async def scenario() -> None:
        slot = UploadSlot("ptn_slots_d", 1)
        assert await slot.acquire() is None  # failing open
        assert not slot.held
        await slot.release()

    asyncio.run(scenario())
