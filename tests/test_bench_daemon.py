"""What ``python -m bench.daemon`` concludes from a record of runs (the run itself is long)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bench.daemon import Plan, Record, timing

T = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
PLAN = Plan(
    pbxs=3,
    minutes=3,
    every=timedelta(seconds=60),
    jitter=timedelta(seconds=30),
    max_concurrent=4,
)


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def test_runs_on_time_are_neither_late_nor_short() -> None:
    record = Record(
        starts={"a": [at(0.5), at(60.4), at(120.3)], "b": [at(20.0), at(80.0), at(140.0)]},
        next_run={"a": at(180), "b": at(200)},
    )
    found = timing(record, PLAN, stopped=at(170))
    assert (found.runs, found.late, found.short, found.missing) == (6, 0, 0, 0)
    assert [round(x, 2) for x in found.first_lateness] == [0.5, 0.0]
    assert [round(x, 2) for x in found.lateness] == [0.4, 0.3, 0.0, 0.0]
    assert max(found.gaps) < 0.01


def test_a_run_more_than_an_interval_late_and_a_target_never_audited_are_counted() -> None:
    # b's run due at 60 started at 150: coalesced with the one due at 120 (next at 180).
    record = Record(
        starts={"a": [at(1), at(61), at(121)], "b": [at(0), at(150)], "c": []},
        next_run={"a": at(181), "b": at(180), "c": at(10)},
    )
    found = timing(record, PLAN, stopped=at(170))
    assert found.late == 1
    assert round(max(found.gaps)) == 90
    assert (found.short, found.missing) == (2, 1)  # b lacks one run; c has none at all


def test_a_target_due_just_before_the_stop_is_not_counted_short() -> None:
    record = Record(starts={"a": [at(0), at(60)]}, next_run={"a": at(120)})
    assert timing(record, PLAN, stopped=at(121)).short == 0
    assert timing(record, PLAN, stopped=at(125)).short == 1
