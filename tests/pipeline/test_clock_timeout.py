"""A read task whose trainer stopped reporting fails with a named error instead of
drawing a plan older than the staleness bound."""

from __future__ import annotations

import pytest

from isloader.errors import TrainerStalledError
from isloader.pipeline.clock import SharedStepClock
from isloader.pipeline.plan import ReadTask
from isloader.pipeline.tasks import _wait_for_trainer


def test_a_trainer_that_stops_reporting_is_named_not_outrun() -> None:
    clock = SharedStepClock()
    clock.reset(0)
    clock.advance(3)
    task = ReadTask(rows=128, seed=(7, 2, 40, 1), count=128, first_step=40)
    _wait_for_trainer(clock, task, prefetch=40, timeout=0.05)  # due already: no wait
    with pytest.raises(TrainerStalledError, match=r"rank 1 finished 3 steps of epoch 2"):
        _wait_for_trainer(clock, task, prefetch=16, timeout=0.05)
    clock.advance(24)
    _wait_for_trainer(clock, task, prefetch=16, timeout=0.05)  # caught up: drawn
