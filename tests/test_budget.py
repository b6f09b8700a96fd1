"""The listing budget: a token bucket on a clock the test moves (no sleeps)."""

from __future__ import annotations

import pytest

from wsplex.app import Budget, too_soon

pytestmark = pytest.mark.memory_only("a pure value: no hub involved")


def test_a_burst_then_one_a_second() -> None:
    now = [100.0]
    budget = Budget(burst=3, rate=1.0, clock=lambda: now[0])
    assert [budget.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.take() == pytest.approx(1.0)
    now[0] += 0.5
    assert budget.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert budget.take() == 0.0
    now[0] += 100.0  # a long pause earns back the burst, no more
    assert [budget.take() for _ in range(4)][-1] > 0
    assert too_soon(0.4) == "too many listings; try again in 1 s"
