"""MultiObjectiveASHA driven directly with fake trials and a fake controller (no Ray cluster)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from raywae.tune.mo_asha import (
    MultiObjectiveASHA,
    aggregate,
    crowding_distance,
    default_setting,
    nondominated_rank,
    rank_order,
)

C, P, S = TrialScheduler.CONTINUE, TrialScheduler.PAUSE, TrialScheduler.STOP
MODES = ["min", "max"]  # recon (lower better), mig (higher better)


@dataclass
class FakeTrial:
    trial_id: str
    config: dict
    status: str = Trial.PENDING


@dataclass
class FakeController:
    """What the scheduler calls on Tune's controller: get_trials, stop_trial (which, like
    Tune's, calls the scheduler's on_trial_remove for a PAUSED trial, and its
    on_trial_complete for a RUNNING one)."""

    sched: MultiObjectiveASHA
    trials: list[FakeTrial] = field(default_factory=list)
    stop_calls: list[str] = field(default_factory=list)

    def get_trials(self) -> list[FakeTrial]:
        return self.trials

    def stop_trial(self, trial: FakeTrial) -> None:
        self.stop_calls.append(trial.trial_id)
        if trial.status == Trial.PAUSED:
            self.sched.on_trial_remove(self, trial)
        elif trial.status == Trial.RUNNING:
            self.sched.on_trial_complete(self, trial, {})
        trial.status = Trial.TERMINATED

    def add(self, tid: str, setting: int, seed: int = 0) -> FakeTrial:
        trial = FakeTrial(tid, {"lr": setting, "seed": seed})
        self.trials.append(trial)
        self.sched.on_trial_add(self, trial)
        return trial

    def report(self, trial: FakeTrial, step: int, recon: float, mig: float) -> str:
        """One result, with the status change Tune would apply for the answer."""
        trial.status = Trial.RUNNING
        action = self.sched.on_trial_result(self, trial, {"step": step, "recon": recon, "mig": mig})
        trial.status = {P: Trial.PAUSED, S: Trial.TERMINATED}.get(action, Trial.RUNNING)
        return action


def make(replicates: int = 1, eta: float = 2) -> tuple[MultiObjectiveASHA, FakeController]:
    sched = MultiObjectiveASHA(
        metrics=["recon", "mig"],
        modes=MODES,
        grace_period=100,
        reduction_factor=eta,
        max_t=1000,
        replicates=replicates,
    )
    return sched, FakeController(sched)


def test_pure_functions_on_a_known_front() -> None:
    pts = np.array([[1, 5], [2, 6], [3, 4], [2, 3], [4, 7]], float)
    # (1,5) (2,6) (4,7) trade recon for mig; (3,4) and (2,3) are beaten by (1,5)
    assert nondominated_rank(pts, MODES).tolist() == [0, 0, 1, 1, 0]
    # both minimised: (1,5) (2,3) first; then (2,6) (3,4); (4,7) last
    assert nondominated_rank(pts, ["min", "min"]).tolist() == [0, 1, 1, 0, 2]
    # gaps / ranges: recon 3/4 and 3/4, mig 3/5 and 3/5; the two ends are infinite
    cd = crowding_distance(np.array([[1, 5], [2, 3], [4, 2], [5, 0]], float))
    assert cd.tolist() == pytest.approx([np.inf, 1.35, 1.35, np.inf])
    # front 0 = {0, 1, 4}: ends 0 and 4 (inf, arrival order), then 1; front 1 = {2, 3}
    assert rank_order(pts, MODES).tolist() == [0, 4, 1, 2, 3]


def test_nondominated_rank_matches_optuna() -> None:
    mo = pytest.importorskip("optuna.study._multi_objective")
    if not hasattr(mo, "_fast_non_domination_rank"):
        pytest.skip("optuna moved its non-dominated sort")
    pts = np.random.default_rng(0).integers(0, 6, size=(40, 3)).astype(float)
    loss = pts * np.array([1, -1, 1])
    ours = nondominated_rank(pts, ["min", "max", "min"])
    assert ours.tolist() == mo._fast_non_domination_rank(loss).tolist()


def test_aggregate_drops_the_worse_half_by_the_last_max_metric() -> None:
    vals = np.array([[1.0, 0.9, 5.0], [9.0, 0.1, 1.0], [3.0, 0.5, 2.0]])
    # last "max" column is 2: keep ceil(3/2) = 2 rows with the largest col 2 (rows 0, 2)
    assert aggregate(vals, ["min", "max", "max"]) == pytest.approx([2.0, 0.7, 3.5])
    # no "max" metric: by the first metric, lower better (rows 0, 2)
    assert aggregate(vals, ["min", "min", "min"]) == pytest.approx([2.0, 0.7, 3.5])
    assert aggregate(vals[:1], MODES + ["min"]) == pytest.approx(vals[0])


def test_default_setting_ignores_the_seed() -> None:
    a = default_setting({"lr": 1, "dims": [2, 3], "seed": 0})
    assert a == default_setting({"dims": [2, 3], "lr": 1, "seed": 7})
    assert a != default_setting({"lr": 2, "dims": [2, 3], "seed": 0})
    hash(a)


def feed_known_front(ctl: FakeController) -> list[str]:
    """Seven settings reach rung 100 one at a time (eta = 2); (recon, mig) per arrival."""
    points = [(5, 0.2), (6, 0.1), (7, 0.05), (1, 0.15), (9, 0.9), (8, 0.3), (6.5, 0.28)]
    return [ctl.report(ctl.add(f"t{i}", i), 101, *pt) for i, pt in enumerate(points)]


def test_rung_promotes_the_front_then_by_crowding() -> None:
    sched, ctl = make()
    # t0 first: continues. t1, t2: dominated by t0. t3: on the front with t0 (2nd of 4).
    # t4 (9, 0.9): worst recon, so a recon-only rank would stop it; on the front, an end
    # (infinite crowding): 2nd of 5, top 3 kept. t5: on the front, 3rd of 6 by crowding.
    # t6 (6.5, 0.28): non-dominated too, but the most crowded of a 5-point front: 5th of 7,
    # top 4 kept -> stopped.
    assert feed_known_front(ctl) == [C, S, S, C, C, C, S]
    assert set(sched.stopped) == {"t1", "t2", "t6"}


def test_results_without_every_metric_or_at_max_t_continue_unrecorded() -> None:
    sched, ctl = make()
    t = ctl.add("t0", 0)
    assert sched.on_trial_result(ctl, t, {"step": 150, "recon": 1.0}) == C
    assert sched.on_trial_result(ctl, t, {"step": 1000, "recon": 1.0, "mig": 0.0}) == C
    assert "0 settings" in sched.debug_string() and not sched.stopped


def test_replicates_train_on_then_decide_on_the_aggregate() -> None:
    sched, ctl = make(replicates=3)
    a = [ctl.add(f"a{s}", 0, s) for s in range(3)]
    b = [ctl.add(f"b{s}", 1, s) for s in range(3)]
    c = [ctl.add(f"c{s}", 2, s) for s in range(3)]
    assert [ctl.report(t, 100, 2.0, 0.5) for t in a] == [C, C, C]  # alone at the rung
    assert ctl.report(b[0], 100, 1.5, 0.6) == C  # waits for its siblings, training on
    assert ctl.report(b[1], 100, 1.5, 0.6) == C
    # b2 alone (9, 0.0) or the plain mean (4, 0.4) is dominated by a's (2, 0.5); the paper's
    # aggregate drops it: (1.5, 0.6) dominates a, so b ranks 1st of 2 and continues
    assert ctl.report(b[2], 100, 9.0, 0.0) == C
    assert not sched.stopped and not ctl.stop_calls
    # c (3, ~0.42) is dominated by both: 3rd of 3, top 2 kept; the siblings that trained on
    # while they waited are stopped with it
    assert [ctl.report(t, 100, 3.0, m) for t, m in zip(c, [0.4, 0.4, 0.45])] == [C, C, S]
    assert ctl.stop_calls == ["c0", "c1"]
    assert set(sched.stopped) == {"c0", "c1", "c2"}
    assert sched.stop_reason("c0")[0] == 100


def test_a_finished_replicate_is_not_stopped_and_an_errored_one_no_longer_counts() -> None:
    sched, ctl = make(replicates=3)
    a = [ctl.add(f"a{s}", 0, s) for s in range(3)]
    b = [ctl.add(f"b{s}", 1, s) for s in range(3)]
    assert [ctl.report(t, 100, 1.0, 0.9) for t in a] == [C, C, C]
    assert ctl.report(b[0], 100, 5.0, 0.1) == C
    b[0].status = Trial.TERMINATED  # it trained to its end before its siblings arrived
    sched.on_trial_complete(ctl, b[0], {})
    b[2].status = Trial.ERROR
    sched.on_trial_error(ctl, b[2])  # decided without it: b1 completes the setting
    assert ctl.report(b[1], 100, 5.0, 0.1) == S  # dominated by a: 2nd of 2, top 1 kept
    assert ctl.stop_calls == [] and set(sched.stopped) == {"b1"}


def test_state_round_trips_keep_the_decisions(tmp_path: object) -> None:
    sched, ctl = make()
    feed_known_front(ctl)
    again, ctl2 = make()
    path = str(tmp_path / "sched.pkl")
    sched.save(path)
    again.restore(path)
    third, _ = make()
    third.set_state(sched.get_state())
    for other in (again, third):
        assert other.stopped == sched.stopped and other.debug_string() == sched.debug_string()
        ctl2.sched = other
        # the same eighth arrival meets the same rivals in the same order: same answer
        t = FakeTrial("t7", {"lr": 7, "seed": 0})
        other.on_trial_add(ctl2, t)
        assert other.on_trial_result(ctl2, t, {"step": 100, "recon": 6, "mig": 0.29}) == S


def test_stop_reason_names_step_and_rung() -> None:
    sched, ctl = make()
    feed_known_front(ctl)
    assert sched.stop_reason("t6") == (
        101,
        "mo_asha: rung 100: setting ranked 5 of 7 (front 1), keeps top 4",
    )
    assert sched.stop_reason("t0") is None
