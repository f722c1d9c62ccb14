"""The attempt's stages (moetrace.attempt): an error comes out tagged with the phase it happened in,
Ctrl-C included; the tag names the innermost stage; the timing of a stage is kept only when it ends."""

from __future__ import annotations

import pytest

from moetrace.attempt.context import Attempt, StageError, stage


def test_a_stage_tags_what_it_raises_with_its_phase():
    with pytest.raises(StageError) as e:
        with stage("warmup"):
            raise RuntimeError("boom")
    assert e.value.phase == "warmup" and isinstance(e.value.cause, RuntimeError)


def test_ctrl_c_is_tagged_too_and_the_innermost_stage_wins():
    with pytest.raises(StageError) as e:
        with stage("measure"):
            with stage("launch"):
                raise KeyboardInterrupt
    assert e.value.phase == "launch" and isinstance(e.value.cause, KeyboardInterrupt)


def test_a_stage_that_fails_records_no_time():
    ctx = Attempt(None, None, None, None, None, None)
    with ctx.timed("warmup_s"):
        pass
    with pytest.raises(RuntimeError), ctx.timed("profile_s"):
        raise RuntimeError
    with ctx.timed("measure_s", add=True):
        pass
    with ctx.timed("measure_s", add=True):
        pass
    assert set(ctx.phases) == {"warmup_s", "measure_s"}
