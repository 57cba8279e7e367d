"""Regressions found by benchmarks/family_matrix.py (every command against every emulated teacher family)."""

from __future__ import annotations

import asyncio

from synthkd.teachers.base import TeacherRequest
from synthkd.teachers.families import FamilyTable
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.teachers.pricing import PriceTable
from synthkd.testing.server import FaultConfig


def test_deepseek_chat_k_samples_go_one_by_one_without_a_400_first(make_server):
    """The family said "`n` is not supported" but let n be tried: every run paid one refused request first."""
    assert FamilyTable.default().lookup("deepseek-chat").n_samples is False
    srv = make_server(FaultConfig(), flavor="deepseek")
    t = OpenAICompatibleTeacher("deepseek-chat", base_url=srv.base_url, api_key=None, prices=PriceTable(),
                                concurrency=1)

    async def go():
        async def gen():
            for i in range(3):
                yield TeacherRequest.user(f"r{i}", f"prompt {i}", samples=3, params={"temperature": 0.7})
        try:
            return [r async for r in t.stream(gen())]
        finally:
            await t.aclose()

    results = asyncio.run(go())
    assert len(results) == 9 and all(r.ok for r in results)
    assert srv.stats()["by_outcome"]["bad_request"] == 0 and t.stats.reshaped == 0 and t.stats.attempts == 9
