"""The reward-hacking monitor: reward up and answers down beyond one SE, k evaluations in a row, warned once."""

from __future__ import annotations

from workbench.training.monitor import RewardHackingMonitor


def _row(step, reward, acc, se=0.05):
    return {
        "step": step,
        "eval_reward_mean": reward,
        "eval_reward_mean_se": 0.1,
        "eval_answer_accuracy_thinking": acc,
        "eval_answer_accuracy_thinking_se": se,
    }


def test_it_fires_once_after_k_evaluations_in_a_row():
    m = RewardHackingMonitor(patience=2)
    assert m.observe(_row(0, -1.0, 0.50)) is None
    assert m.observe(_row(2, 0.5, 0.30)) is None  # one evaluation: not yet
    warning = m.observe(_row(4, 0.8, 0.25))
    assert warning and warning["since_step"] == 2 and warning["step"] == 4 and "reward hacking" in warning["message"]
    assert m.observe(_row(6, 0.9, 0.20)) is None and m.warning is warning  # once


def test_noise_and_a_broken_streak_do_not_fire():
    m = RewardHackingMonitor(patience=2)
    m.observe(_row(0, -1.0, 0.50))
    assert m.observe(_row(2, 0.5, 0.47)) is None  # within one SE of the start: noise
    assert m.observe(_row(4, 0.5, 0.30)) is None  # one in a row
    assert m.observe(_row(6, -1.0, 0.30)) is None  # the reward fell back: the streak ends
    assert m.observe(_row(8, 0.5, 0.30)) is None and m.warning is None
    assert RewardHackingMonitor().observe({"step": 0, "eval_loss": 2.0}) is None  # no end task: never fires


def test_the_chart_marks_the_band():
    from workbench.training_viz import training_curves

    rows = [
        {"step": 0, "reward_mean": -1.0},
        {"step": 1, "reward_mean": 0.0},
        {"step": 2, "reward_mean": 0.5, "reward_hacking_warning": 1, "reward_hacking_since_step": 1},
    ]
    fig = training_curves({"run": rows})
    assert any(shape.fillcolor == "crimson" for shape in fig.layout.shapes)
    assert not training_curves({"run": rows[:2]}).layout.shapes
