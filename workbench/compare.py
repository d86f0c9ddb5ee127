"""Score the same positions and the same thoughts with several reward designs, side by side.

Per design: mean, std, share of positive rewards, share of degenerate groups (all G rewards equal, so the
group-relative advantage is zero - PretrainZero's collapse finding), the advantage signal-to-noise ratio
(spread of the position means over the mean spread within a position), and what it cost; plus the
Spearman correlation between designs. The thoughts are sampled (`compare_designs`) or given (`compare_on` any
reward map, e.g. from `score_thoughts`).

`design_sanity` runs every design on probe thoughts (`workbench.probes`) and asks whether it orders them as
information would: leak > echo > neutral, leak > wrong hint, and not the empty thought above the informative ones.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from workbench.data import parse_positions
from workbench.designs import DESIGNS, DesignInput, DesignOutput
from workbench.engine.thought import SamplingConfig, ThoughtTemplate
from workbench.errors import WorkbenchError
from workbench.models import ModelHandle
from workbench.probes import ProbeMap, family_order_shares
from workbench.rewards import RewardMap, reward_map
from workbench.training.rl_math import degenerate_groups


def parse_designs(spec: str | list[str]) -> list[str]:
    names = (
        list(DESIGNS)
        if spec == "all"
        else ([s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec))
    )
    unknown = [n for n in names if n not in DESIGNS]
    if unknown or not names:
        raise WorkbenchError(
            f"unknown design(s) {', '.join(unknown) or '(none)'}; available: {', '.join(DESIGNS)}, or all"
        )
    return names


def group_stats(rewards: np.ndarray, groups: np.ndarray) -> dict[str, float | None]:
    """Degenerate-group share and advantage SNR of rewards grouped by position."""
    means, spreads, degenerate = [], [], 0
    keys = np.unique(groups)
    for g in keys:
        r = rewards[groups == g]
        means.append(r.mean())
        spreads.append(r.std())
        degenerate += int(degenerate_groups(torch.as_tensor(r, dtype=torch.float64)[None])[0])
    within = float(np.mean(spreads)) if spreads else 0.0
    between = float(np.std(means)) if means else 0.0
    return {
        "degenerate_group_share": degenerate / len(keys) if len(keys) else float("nan"),
        "advantage_snr": between / within if within > 0 else None,
    }


@dataclass
class Comparison:
    reward_map: RewardMap
    outputs: dict[str, DesignOutput]
    sampling_seconds: float
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    total_cost: dict[str, float] = field(default_factory=dict)  # what the whole comparison ran

    def frame(self) -> pd.DataFrame:
        """One row per thought, one column per design."""
        df = self.reward_map.to_dataframe()[["position", "target", "thought_index", "thought", "thought_tokens"]]
        for name, out in self.outputs.items():
            df[name] = out.rewards
        return df

    def spearman(self) -> pd.DataFrame:
        return self.frame()[list(self.outputs)].corr(method="spearman")

    def to_json(self) -> dict:
        rm = self.reward_map
        spearman = self.spearman()
        return {
            "model": rm.model,
            "teacher": rm.teacher,
            "dtype": rm.dtype,
            "source": rm.source,
            "seed": rm.config.seed,
            "settings": {**rm.config.as_dict(), "positions": rm.positions_spec},
            "document_ids": rm.document_ids,
            "positions": rm.positions,
            "thoughts": [{"position": th.position, "text": th.text, "tokens": th.length} for th in rm.thoughts],
            "sampling": {"forward_tokens": rm.generated_tokens, "seconds": self.sampling_seconds},
            "total_cost": self.total_cost,
            "designs": {
                name: {
                    "rewards": [float(r) for r in out.rewards],
                    **self.stats[name],
                    "cost": {"forward_tokens": out.forward_tokens, "seconds": out.seconds},
                }
                for name, out in self.outputs.items()
            },
            "spearman": {
                a: {b: (None if math.isnan(v) else float(v)) for b, v in row.items()} for a, row in spearman.iterrows()
            },
        }


def compare_designs(
    policy: ModelHandle,
    teacher: ModelHandle,
    document_ids: list[int],
    positions: str = "every:8",
    config: SamplingConfig = SamplingConfig(),
    template: ThoughtTemplate = ThoughtTemplate(),
    designs: str | list[str] = "all",
    options: dict[str, dict[str, Any]] | None = None,
    progress=None,
) -> Comparison:
    """Sample once, then score the same thoughts with every selected design."""
    names = parse_designs(designs)
    start = time.perf_counter()
    rm = reward_map(policy, teacher, document_ids, positions, config, template, progress=progress)
    return compare_on(policy, teacher, rm, names, options, sampling_seconds=time.perf_counter() - start)


def compare_on(
    policy: ModelHandle,
    teacher: ModelHandle,
    rm: RewardMap,
    designs: str | list[str] = "all",
    options: dict[str, dict[str, Any]] | None = None,
    sampling_seconds: float | None = None,
) -> Comparison:
    """Score the thoughts of a reward map (sampled, or given with `score_thoughts`) with every selected design.
    Designs that generate after a thought use the map's seed, temperature and top_p."""
    names = parse_designs(designs)
    options = options or {}
    if sampling_seconds is None:
        sampling_seconds = rm.timing.get("score_s", 0.0) + rm.timing.get("sample_s", 0.0)
    document_ids = rm.document_ids
    # one continuation pass long enough for every selected look-ahead design, with self-certainty if needed
    # and one generation after the thoughts long enough for every design that reads one (same seed: a
    # shorter request is a prefix of the longer generation)
    lookahead = [_option(DESIGNS[n], options.get(n, {}), ("n_true", "segment")) for n in names]
    after = [_option(DESIGNS[n], options.get(n, {}), ("guess_tokens", "span_tokens", "segment_tokens")) for n in names]
    inp = DesignInput(
        policy,
        teacher,
        rm,
        prefetch_n=max(lookahead, default=0),
        prefetch_certainty="intuitor" in names,
        prefetch_after=max(after, default=0),
    )
    outputs: dict[str, DesignOutput] = {}
    stats: dict[str, dict[str, Any]] = {}
    groups = inp.groups()
    for name in names:
        out = DESIGNS[name](inp, **options.get(name, {}))
        if len(out.rewards) != len(rm.thoughts):
            raise RuntimeError(f"design {name} returned {len(out.rewards)} rewards for {len(rm.thoughts)} thoughts")
        outputs[name] = out
        r = np.asarray(out.rewards, dtype=float)
        stats[name] = {
            "mean": float(r.mean()),
            "std": float(r.std()),
            "share_positive": float((r > 0).mean()),
            **group_stats(r, groups),
            "seconds_per_reward": out.seconds / len(r) if len(r) else float("nan"),
        }
    extra = [(c.forward_tokens, c.seconds) for c in inp._continuations.values()]
    extra += [(tokens, seconds) for _, tokens, seconds, _ in inp._after.values()]
    total = {
        "forward_tokens": rm.generated_tokens + len(document_ids) + sum(t for t, _ in extra),
        "seconds": sampling_seconds + sum(s for _, s in extra),
    }
    return Comparison(rm, outputs, sampling_seconds, stats, total)


def design_sanity(
    policy: ModelHandle,
    teacher: ModelHandle,
    probes: ProbeMap,
    designs: str | list[str] = "all",
    options: dict[str, dict[str, Any]] | None = None,
) -> tuple[pd.DataFrame, Comparison]:
    """Every selected design on the same probe thoughts: one row per design with the share of positions where it
    orders leak > echo > neutral and leak > wrong_hint, where the empty thought beats both informative probes, its
    degenerate-group share on the probes (a position's probes all scored alike), and its mean reward per family.

    Returns (the table, the comparison of the designs on the probes)."""
    result = compare_on(policy, teacher, probes.reward_map, designs, options)
    frame = pd.DataFrame({"position": [th.position for th in probes.reward_map.thoughts], "family": probes.family_of})
    rows = {}
    for name, out in result.outputs.items():
        frame["r"] = np.asarray(out.rewards, dtype=float)
        table = frame.pivot(index="position", columns="family", values="r")
        means = frame.groupby("family", sort=False)["r"].mean()
        rows[name] = {
            **family_order_shares(table),
            "degenerate_group_share": result.stats[name]["degenerate_group_share"],
            **{f"mean_{family}": float(means[family]) for family in probes.families},
        }
    return pd.DataFrame(rows).T, result


def sweep(
    policy: ModelHandle,
    teacher: ModelHandle,
    document_ids: list[int],
    positions: str,
    base: SamplingConfig,
    setting: str,
    values: list,
    designs: str | list[str] = "all",
    template: ThoughtTemplate = ThoughtTemplate(),
    progress: bool = False,
    reuse: Comparison | None = None,
) -> pd.DataFrame:
    """Compare the designs at each value of one sampling setting (G, thought_tokens or temperature).

    One row per (value, design) with that design's statistics. `progress`: a tqdm bar over the values (its
    estimate of the time left appears after the first value). `reuse`: a comparison already made on this document;
    the value whose settings, positions and template equal it takes its statistics instead of sampling again (the
    same settings and seed give the same thoughts, and a design's rewards do not depend on the others run beside it).
    """
    import dataclasses

    if setting not in ("G", "thought_tokens", "temperature", "top_p"):
        raise WorkbenchError(f"cannot sweep {setting!r}; sweep G, thought_tokens, temperature or top_p")
    rows = []
    if progress:
        from tqdm.auto import tqdm

        values = tqdm(list(values), desc=f"sweep over {setting}", unit="setting")
    wanted = parse_designs(designs)
    for value in values:
        config = dataclasses.replace(base, **{setting: value}).validate()
        if reuse is not None and _same_run(reuse, document_ids, positions, config, template, wanted):
            result = reuse
        else:
            result = compare_designs(policy, teacher, document_ids, positions, config, template, wanted)
        for name in wanted:
            st = result.stats[name]
            rows.append({setting: value, "design": name, **st, "forward_tokens": result.outputs[name].forward_tokens})
    return pd.DataFrame(rows)


def _same_run(
    done: Comparison,
    document_ids: list[int],
    positions: str,
    config: SamplingConfig,
    template: ThoughtTemplate,
    designs: list[str],
) -> bool:
    rm = done.reward_map
    return (
        rm.document_ids == list(document_ids)
        and rm.config == config
        and rm.template == template
        and rm.positions_spec == str(parse_positions(positions))
        and set(designs) <= set(done.stats)
    )


def _option(fn, opts: dict[str, Any], names: tuple[str, ...]) -> int:
    """A design's length option among `names` (as given, else its default), 0 if it has none."""
    import inspect

    params = inspect.signature(fn).parameters
    for name in names:
        if name in params:
            return int(opts.get(name, params[name].default))
    return 0
