"""The one metric vocabulary: the statistics functions against a plain computation, and the old spellings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from workbench.metrics import OLD_NAMES, Metrics, renamed, reward_stats, thought_stats


def test_thought_stats_against_a_plain_count():
    lengths, ended = [0, 3, 5, 12, 0, 7], ["eos", "marker", "marker", "budget", "marker", "eos"]
    s = thought_stats(lengths, ended)
    assert s["thought_tokens_mean"] == pytest.approx(27 / 6)
    assert s["thought_tokens_p50"] == pytest.approx(4.0)
    assert s["share_empty"] == pytest.approx(2 / 6)
    assert s["share_closed"] == pytest.approx(5 / 6)
    assert (s["share_closed_by_marker"], s["share_closed_by_eos"], s["share_budget"]) == pytest.approx(
        (3 / 6, 2 / 6, 1 / 6)
    )
    assert thought_stats([], []) == {}


def test_reward_stats_leave_nan_gains_out_of_the_mean_only():
    s = reward_stats([1.0, -2.0, 0.5, 0.0], [0.5, np.nan, -1.0, 2.0])
    assert s["reward_mean"] == pytest.approx(-0.125) and s["share_positive"] == pytest.approx(0.5)
    assert s["content_gain_mean"] == pytest.approx(0.5)  # (0.5 - 1 + 2) / 3
    assert s["share_content_gain_positive"] == pytest.approx(0.5)  # 2 of 4
    assert np.isnan(reward_stats([])["reward_mean"])


def test_old_metric_names_still_answer_with_a_warning():
    m = Metrics({"reward_mean": 1.5})
    with pytest.warns(DeprecationWarning, match="reward_mean"):
        assert m["mean_reward"] == 1.5
    with pytest.raises(KeyError):
        m["no_such_metric"]
    row = renamed({"step": 3, "eval_content_gain": 0.25, "eval_thought_tokens": 9.0, "reward_mean": 1.0})
    assert row == {"step": 3, "eval_content_gain_mean": 0.25, "eval_thought_tokens_mean": 9.0, "reward_mean": 1.0}
    assert set(OLD_NAMES.values()).isdisjoint(OLD_NAMES)  # no chain of renames
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert renamed({"reward_mean": 1.0, "mean_reward": 2.0}) == {"reward_mean": 1.0, "mean_reward": 2.0}
