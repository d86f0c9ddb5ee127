"""The design arena: several reward designs trained from the same start, at the same compute, under one evaluation.

    workbench arena configs/arena.yaml                 # the designs listed in the file
    workbench arena configs/arena.yaml --designs rlp,nover --set max_steps 3

The file is an RLP training config plus `arena_designs: [rlp, quiet_star, ...]`. The first design trains
`max_steps` steps; its training FLOPs (every forward, `workbench/training/flops.py`) become the budget of every other design,
which stops at the first step that reaches it (so designs with costlier extra passes take fewer steps; each run's
FLOPs are in the table). Everything else is shared: seed, data, sampler, RLOO advantages, loss, guards, checkpoints
and the one evaluation (`workbench/evaluation.py`), which is checked to be identical across the runs before the table
is written. Binary designs starve the advantage on small models: `degenerate_group_share` per step shows it.

`DESIGN+control` (e.g. `rlp+control`) is that design's null control: the same run with its advantages shuffled within
each group (`control: shuffled_advantages`), trained at the same budget; a design whose end task moves no further than
its control's has shown no signal beyond update noise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.run_dirs import new_run_dir, write_json
from workbench.training.configs import config_from_dict, read_config_file

ARENA_KEY = "arena_designs"
TABLE_METRICS = (
    "eval_reward_mean",
    "eval_content_gain_mean",
    "eval_logp_with_thought",
    "eval_loss",
    "eval_accuracy",
    "eval_thought_tokens",
)


CONTROL_SUFFIX = "+control"


def design_of(name: str) -> tuple[str, str]:
    """(reward design, control) of an arena entry: `nover` -> ("nover", ""), `rlp+control` -> ("rlp", "shuffled_advantages")."""
    if name.endswith(CONTROL_SUFFIX):
        return name[: -len(CONTROL_SUFFIX)], "shuffled_advantages"
    return name, ""


def load_arena(path: str | Path, overrides: dict[str, Any] | None = None, designs: list[str] | None = None):
    """(the shared RLP config, the designs) of an arena file; `designs` replaces the file's list."""
    from workbench.compare import parse_designs

    path, data = read_config_file(path)
    listed = data.pop(ARENA_KEY, None)
    names = designs if designs is not None else listed or ["rlp"]
    names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    parse_designs([design_of(n)[0] for n in names])  # one line naming an unknown design
    if len(set(names)) != len(names):
        raise WorkbenchError(f"{ARENA_KEY}: a design is listed twice: {names}")
    config = config_from_dict({**data, **(overrides or {})}, str(path))
    if config.trainer != "rlp":
        raise WorkbenchError(f"{path}: an arena trains reward designs: trainer must be rlp")
    return config, names


def run_arena(config, designs: list[str], root: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Train every design from the same start; returns (and writes to <root>/arena.json) the comparison."""
    from workbench.evaluation import require_same_settings, settings_of_run
    from workbench.training.launch import train
    from workbench.training.trainer import read_metrics

    root = Path(root) if root else new_run_dir(config.run_name or "arena")
    root.mkdir(parents=True, exist_ok=True)
    budget = None
    runs: dict[str, dict[str, Any]] = {}
    for name in designs:
        design, control = design_of(name)
        values = {
            **config.to_dict(),
            "reward_design": design,
            "control": control,
            "run_name": f"{config.run_name}-{name}",
            "output_dir": str(root / name),
        }
        if budget is not None:  # the same compute as the first design, however many steps that takes
            values.update(flops_budget=budget, max_steps=config.max_steps * 4)
        log(f"arena: training {name}" + (f" to {budget:.3g} FLOPs" if budget else f" for {config.max_steps} steps"))
        summary = train(config_from_dict(values))
        if budget is None:
            budget = summary["total_flops"]
        rows = read_metrics(root / name)
        last_eval = next((r for r in reversed(rows) if "eval_loss" in r), {})
        first_eval = next((r for r in rows if "eval_loss" in r), {})
        steps = [r for r in rows if r["step"] > 0]
        runs[name] = {
            "run_dir": str(root / name),
            "steps": summary["steps"],
            "flops": summary["total_flops"],
            "degenerate_group_share": sum(r["degenerate_group_share"] for r in steps) / max(1, len(steps)),
            "reward_mean": [r["reward_mean"] for r in steps],
            **{f"first_{k}": first_eval.get(k) for k in TABLE_METRICS},
            **{k: last_eval.get(k) for k in TABLE_METRICS},
        }
    settings = require_same_settings({name: settings_of_run(info["run_dir"]) for name, info in runs.items()})
    result = {
        "designs": designs,
        "flops_budget": budget,
        "evaluation": settings.as_dict(),
        "runs": runs,
        "config": config.to_dict(),
    }
    write_json(root / "arena.json", result)
    return {**result, "root": str(root)}


def arena_table(result: dict):
    """One row per design: steps, FLOPs, degenerate share, and the held-out metrics before and after."""
    import pandas as pd

    rows = []
    for name, info in result["runs"].items():
        row = {
            "design": name,
            "steps": info["steps"],
            "flops": info["flops"],
            "degenerate_group_share": info["degenerate_group_share"],
        }
        for k in TABLE_METRICS:
            row[k] = info[k]
            if info.get(f"first_{k}") is not None and info[k] is not None:
                row[f"{k}_change"] = info[k] - info[f"first_{k}"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("design")


def read_arena(root: str | Path) -> dict:
    return json.loads((Path(root) / "arena.json").read_text())
