"""The `workbench` command: score a document, run a notebook, build the report.

Errors the user can fix come out as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from workbench.errors import WorkbenchError

DTYPE_NAMES = ("auto", "bfloat16", "float32", "float16")  # workbench.hardware.DTYPE_NAMES, without importing torch


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_at_least(low: int):
    """An argparse type: an integer >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="workbench", description="RLP workbench: thoughts, information-gain rewards, notebooks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    score = sub.add_parser(
        "score", help="sample thoughts on a document (or score given ones) and write every reward as JSON"
    )
    score.add_argument(
        "path",
        help="a .txt file (one document), a .jsonl file (a 'text' field per line), corpus:eval, thinking:eval, ... or one document of them: SPEC#ID (thinking:eval#eval-0001)",
    )
    score.add_argument(
        "--doc", default=None, help="which document of a .jsonl file: id or 0-based index (default: first)"
    )
    score.add_argument(
        "--model",
        default="gemma3-270m",
        help="bundled short name, hub id, local directory, a training run's directory, or warm:BASE (the thinking-ready model)",
    )
    score.add_argument(
        "--positions",
        default=None,
        help="all | every:K | random:N | top-entropy:N | marked | at:T1,T2,... (default every:8)",
    )
    _given_thought_args(score)
    score.add_argument("-G", type=_positive_int, default=4, help="thoughts per position")
    score.add_argument("--thought-tokens", type=_non_negative_int, default=32, help="token budget per thought")
    score.add_argument("--temperature", type=float, default=0.7)
    score.add_argument("--top-p", type=float, default=1.0)
    score.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        default="auto",
        help="auto (default): bfloat16 where this machine computes it natively, else float32",
    )
    score.add_argument("--seed", type=_non_negative_int, default=0)
    score.add_argument(
        "--max-tokens", type=_positive_int, default=None, help="truncate the document to this many tokens"
    )
    score.add_argument(
        "--max-rows", type=_positive_int, default=256, help="rows (position x thought) decoded per batch"
    )
    score.add_argument("--json", required=True, dest="json_out", help="where to write the results")

    compare = sub.add_parser("compare", help="score the same thoughts with several reward designs, side by side")
    compare.add_argument(
        "path",
        help="a .txt file (one document), a .jsonl file (a 'text' field per line), or corpus:eval, thinking:eval, ...",
    )
    compare.add_argument("--doc", default=None, help="which document of a .jsonl file: id or 0-based index")
    compare.add_argument(
        "--model",
        default="gemma3-270m",
        help="bundled short name, hub id, local directory, a training run's directory, or warm:BASE (the thinking-ready model)",
    )
    compare.add_argument("--designs", default="all", help="all, or a comma-separated list of registered designs")
    compare.add_argument(
        "--positions",
        default=None,
        help="all | every:K | random:N | top-entropy:N | at:T1,T2,... (default every:8; with --probes every:16)",
    )
    _given_thought_args(compare)
    compare.add_argument(
        "--probes",
        action="store_true",
        help="score probe thoughts built from the document (empty, leak, echo, wrong_hint, neutral) and "
        "write the design sanity table: does each design order them as information would?",
    )
    compare.add_argument(
        "--probe-family",
        action="append",
        default=[],
        metavar="NAME=TEMPLATE",
        help="with --probes: add a family from a text template with {next}, {guess}, {context}, "
        "e.g. 'hint=Maybe {next}' (repeatable)",
    )
    compare.add_argument("-G", type=_positive_int, default=4, help="thoughts per position")
    compare.add_argument("--thought-tokens", type=_non_negative_int, default=32, help="token budget per thought")
    compare.add_argument("--temperature", type=float, default=0.7)
    compare.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        default="auto",
        help="auto (default): bfloat16 where this machine computes it natively, else float32",
    )
    compare.add_argument("--seed", type=_non_negative_int, default=0)
    compare.add_argument(
        "--max-tokens", type=_positive_int, default=None, help="truncate the document to this many tokens"
    )
    compare.add_argument("--json", required=True, dest="json_out", help="where to write the results")

    run = sub.add_parser("run", help="execute a notebook headlessly into runs/<notebook>-<timestamp>/", add_help=False)
    run.add_argument("notebook", nargs="?", help="a notebook path, stem or number (e.g. 02)")
    run.add_argument(
        "-h",
        "--help",
        action="store_true",
        help="with a notebook: list its parameters (default, type, help); without: this message",
    )
    run.set_defaults(print_run_help=run.print_help)
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    run.add_argument("--runs", default=None, help="root folder for run directories (default: runs/)")
    run.add_argument(
        "--code",
        choices=["show", "fold", "hide"],
        default="show",
        help="code cells in the exported HTML: shown (default), folded under a click, or hidden",
    )

    report = sub.add_parser("report", help="run the curated notebooks and write an HTML report")
    report.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    report.add_argument("--runs", default=None, help="root folder for run directories (default: runs/)")
    report.add_argument(
        "--keep-weights",
        action="store_true",
        help="keep the training runs' checkpoints in the report (1-2 GB each; by default they are "
        "deleted once notebook 05 has read them)",
    )
    report.add_argument(
        "--code",
        choices=["show", "fold", "hide"],
        default="fold",
        help="code cells in the exported notebooks: folded under a click (default), shown, or hidden",
    )

    train = sub.add_parser(
        "train", help="train with a YAML config (RLP or the next-token baseline) into a run directory"
    )
    train.add_argument("config", nargs="?", help="a YAML config, e.g. configs/rlp_tiny.yaml")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_DIR",
        help="continue from the last checkpoint (of RUN_DIR, of output_dir, or of the newest runs/<run_name>-*)",
    )
    train.add_argument("--output-dir", default=None, help="the run directory (overrides the config's output_dir)")
    train.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("FIELD", "VALUE"),
        help="override a config field (YAML syntax for the value), e.g. --set max_steps 3",
    )
    train.add_argument(
        "--help-config",
        choices=["rlp", "ntp", "warmstart"],
        help="list every field of a trainer's config with its help and exit",
    )

    arena = sub.add_parser(
        "arena", help="train several reward designs from the same start at the same compute, under one evaluation"
    )
    arena.add_argument("config", help="an arena file: an RLP config plus arena_designs, e.g. configs/arena.yaml")
    arena.add_argument("--designs", default=None, help="comma-separated designs (replaces the file's arena_designs)")
    arena.add_argument("--output-dir", default=None, help="the arena directory (default: runs/<run_name>-<time>)")
    arena.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("FIELD", "VALUE"),
        help="override a field of the shared config, e.g. --set max_steps 3",
    )

    export = sub.add_parser(
        "export", help="write a run's trained model as a plain transformers directory with a model card"
    )
    export.add_argument("run_dir", help="a training run's directory (what workbench train printed)")
    export.add_argument("out_dir", help="where to write the model (missing or empty; see --overwrite)")
    export.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is not empty")
    export.add_argument("--step", type=int, default=None, help="export this step's checkpoint instead of the last")
    export.add_argument(
        "--push-to-hub",
        default=None,
        metavar="REPO",
        help="also upload OUT_DIR to this Hugging Face model repository (ORG/NAME; needs a token and network)",
    )
    docs = sub.add_parser("docs", help="build the documentation site (mkdocs, offline) into site/, or serve it")
    docs.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="a `workbench report` folder: its executed notebooks become the tutorials (default: the "
        "committed notebooks, without outputs)",
    )
    docs.add_argument("--out", default=None, help="where to write the site (default: site/ in the repository)")
    docs.add_argument("--serve", action="store_true", help="serve it on http://127.0.0.1:8000 and rebuild on changes")
    compare_runs = sub.add_parser(
        "compare-runs",
        help="two runs on the same evaluated answers: each metric's paired "
        "difference with its standard error and 95%% interval",
    )
    compare_runs.add_argument("run_a", help="a training run's directory")
    compare_runs.add_argument("run_b", help="another run evaluated under the same settings")
    compare_runs.add_argument(
        "--step-a", type=int, default=None, help="RUN_A's evaluation at this step (default: its last)"
    )
    compare_runs.add_argument(
        "--step-b", type=int, default=None, help="RUN_B's evaluation at this step (default: its last)"
    )
    compare_runs.add_argument(
        "--json", dest="json_out", default=None, metavar="FILE", help="also write the table as JSON"
    )
    return parser


def _given_thought_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--thoughts",
        default=None,
        metavar="FILE.jsonl",
        help='score these thoughts instead of sampling: one {"position": t, "thought": "text"} per line',
    )
    parser.add_argument("--at", type=_positive_int, default=None, metavar="POS", help="with --thought: the position t")
    parser.add_argument(
        "--thought",
        action="append",
        default=None,
        metavar="TEXT",
        help="a thought to score at --at (repeatable; placed between the markers as written)",
    )


def _given_thoughts(args: argparse.Namespace) -> list[tuple[int, object]] | None:
    """The thoughts to score instead of sampling (from --thoughts or --at/--thought), or None; checked before a model loads."""
    from workbench.data import load_thoughts

    one_off = args.at is not None or args.thought is not None
    if args.thoughts and one_off:
        raise WorkbenchError("give either --thoughts FILE or --at POS --thought TEXT, not both")
    if one_off and (args.at is None or args.thought is None):
        raise WorkbenchError("--at POS and --thought TEXT go together")
    if getattr(args, "probes", False) and (args.thoughts or one_off):
        raise WorkbenchError("--probes builds its own thoughts; drop --thoughts/--thought")
    if (args.thoughts or one_off) and args.positions is not None:
        raise WorkbenchError("--positions applies to sampled thoughts; given thoughts carry their own positions")
    return load_thoughts(args.thoughts) if args.thoughts else [(args.at, t) for t in args.thought] if one_off else None


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _checked_inputs(args: argparse.Namespace):
    """Everything that can be checked without a model, checked first: (sampling config, positions, document)."""
    from workbench.data import find_document, load_documents_spec, parse_positions, pick_document
    from workbench.engine.thought import SamplingConfig

    config = SamplingConfig(
        G=args.G,
        thought_tokens=args.thought_tokens,
        temperature=args.temperature,
        top_p=getattr(args, "top_p", 1.0),
        seed=args.seed,
    ).validate()
    spec = parse_positions(args.positions or ("every:16" if getattr(args, "probes", False) else "every:8"))
    if args.doc is None and "#" in args.path and not Path(args.path).exists():
        document = find_document(args.path)  # SPEC#ID, the spelling notebooks use
    else:
        document = pick_document(load_documents_spec(args.path), args.doc)
    if spec.kind == "marked" and not document.answers:
        raise WorkbenchError(
            f'--positions marked: document {document.id!r} has no marked answers (a JSONL "answers" '
            "field, e.g. thinking:eval)"
        )
    out = Path(args.json_out)
    if out.exists() and out.is_dir():
        raise WorkbenchError(f"--json {out} is a directory; give a file path")
    return config, spec, document


def cmd_score(args: argparse.Namespace) -> int:
    from workbench.data import tokenize_document

    given = _given_thoughts(args)
    config, spec, document = _checked_inputs(args)

    import torch
    from tqdm.auto import tqdm

    from workbench.models import load_model, teacher_of
    from workbench.rewards import reward_map
    from workbench.training.warm_start import resolve_model_name

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    policy = load_model(resolve_model_name(args.model, _log), dtype=args.dtype, progress=_log)
    _log(policy.dtype_choice.describe())
    teacher = teacher_of(policy)
    load_s = time.perf_counter() - start
    ids = tokenize_document(policy.tokenizer, document, args.max_tokens)
    if given is not None:
        return _score_given(policy, teacher, ids, given, config, args, load_s, document)
    _log(f"{policy.label}: document {document.id!r}, {len(ids)} tokens, positions {spec}, G={config.G}")
    bar = tqdm(total=None, desc="sampling (thought-token budget)", unit="tok", file=sys.stderr, mininterval=1.0)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    result = reward_map(policy, teacher, ids, spec, config, progress=progress, max_rows=args.max_rows)
    bar.close()
    result.timing["load_s"] = load_s
    out = result.save_json(args.json_out)
    s = result.summary()
    _log(
        f"{s['thoughts']} thoughts at {s['positions']} positions: mean reward {s['reward_mean']:+.3f} nats, "
        f"{s['share_positive']:.0%} positive, mean length {s['thought_tokens_mean']:.1f} tokens; "
        f"{result.generated_tokens / (result.timing['sample_s'] + result.timing['score_s']):.0f} thought tokens/s"
    )
    print(out)
    return 0


def _score_given(policy, teacher, ids, given, config, args, load_s: float, document) -> int:
    from workbench.rewards import score_thoughts

    _log(f"{policy.label}: document {document.id!r}, {len(ids)} tokens, {len(given)} given thoughts")
    result = score_thoughts(policy, teacher, ids, given, config=config, max_rows=args.max_rows)
    result.timing["load_s"] = load_s
    out = result.save_json(args.json_out)
    for th, reward, gain in zip(result.thoughts, result.rewards, result.content_gains):
        _log(
            f"t={th.position} {result.tokens[th.position]!r}: reward {reward:+.3f} nats, content gain {gain:+.3f} "
            f"(empty thought {reward - gain:+.3f}) for {th.text!r}"
        )
    print(out)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from workbench.compare import compare_designs, parse_designs
    from workbench.data import tokenize_document

    given = _given_thoughts(args)
    config, spec, document = _checked_inputs(args)
    designs = parse_designs(args.designs)
    families = _probe_families(args)

    from workbench.models import load_model, teacher_of
    from workbench.run_dirs import write_json
    from workbench.training.warm_start import resolve_model_name

    policy = load_model(resolve_model_name(args.model, _log), dtype=args.dtype, progress=_log)
    _log(policy.dtype_choice.describe())
    teacher = teacher_of(policy)
    ids = tokenize_document(policy.tokenizer, document, args.max_tokens)
    _log(f"{policy.label}: document {document.id!r}, {len(ids)} tokens, designs {', '.join(designs)}")
    if args.probes:
        return _compare_probes(policy, teacher, ids, spec, config, designs, families, args.json_out)
    if given is not None:
        from workbench.compare import compare_on
        from workbench.rewards import score_thoughts

        result = compare_on(policy, teacher, score_thoughts(policy, teacher, ids, given, config=config), designs)
    else:
        result = compare_designs(policy, teacher, ids, str(spec), config, designs=designs)
    write_json(args.json_out, result.to_json())
    for name, st in result.stats.items():
        out = result.outputs[name]
        _log(
            f"{name:>11}: mean {st['mean']:+.3f} std {st['std']:.3f} positive {st['share_positive']:.0%} "
            f"degenerate groups {st['degenerate_group_share']:.0%} cost {out.forward_tokens} tokens {out.seconds:.1f} s"
        )
    print(Path(args.json_out).resolve())
    return 0


def _probe_families(args: argparse.Namespace) -> dict | None:
    """The probe families of `compare --probes`: every registered one, plus NAME=TEMPLATE ones."""
    if not args.probe_family:
        return None
    if not args.probes:
        raise WorkbenchError("--probe-family needs --probes")
    from workbench.probes import PROBE_FAMILIES, template_probe

    families: dict = {name: None for name in PROBE_FAMILIES}
    for item in args.probe_family:
        name, sep, template = item.partition("=")
        if not sep or not name.strip() or not template:
            raise WorkbenchError(f"--probe-family takes NAME=TEMPLATE, e.g. 'hint=Maybe {{next}}'; got {item!r}")
        template_probe(template)  # checks the template's fields now
        families[name.strip()] = template
    return families


def _compare_probes(policy, teacher, ids, spec, config, designs, families, json_out) -> int:
    from workbench.compare import design_sanity
    from workbench.probes import probe_map
    from workbench.run_dirs import write_json

    probes = probe_map(policy, teacher, ids, spec, families, config=config)
    _log(f"{len(probes.reward_map.positions)} positions x {len(probes.families)} probe families")
    table, result = design_sanity(policy, teacher, probes, designs)
    write_json(
        json_out,
        {
            "sanity": {name: {k: (None if v != v else v) for k, v in row.items()} for name, row in table.iterrows()},
            "probes": probes.to_json(),
            "designs": result.to_json()["designs"],
        },
    )
    summary = probes.summary()
    _log("probe family     mean reward  positive  content gain")
    for name, row in summary.iterrows():
        _log(f"{name:<15} {row['reward_mean']:+10.3f} {row['share_positive']:9.0%} {row['content_gain_mean']:+12.3f}")
    _log("design sanity (share of positions): leak>echo>neutral  leak>wrong_hint  empty>informative  degenerate")
    for name, row in table.iterrows():
        _log(
            f"{name:>18}: {row['leak>echo>neutral']:17.0%} {row['leak>wrong_hint']:16.0%} "
            f"{row['empty>informative']:18.0%} {row['degenerate_group_share']:11.0%}"
        )
    print(Path(json_out).resolve())
    return 0


def _overrides(pairs: Sequence[Sequence[str]]) -> dict:
    from workbench.notebook_runner import parse_value

    return {name: parse_value(value) for name, value in pairs}


def cmd_run(args: argparse.Namespace) -> int:
    from workbench.notebook_runner import find_notebook, format_parameter_help, run_notebook

    if args.notebook is None:
        args.print_run_help()
        return 0 if args.help else 2
    if args.help:
        print(format_parameter_help(find_notebook(args.notebook)))
        return 0
    run_dir = run_notebook(args.notebook, _overrides(args.param), runs_root=args.runs, log=_log, code=args.code)
    print(run_dir.resolve())  # the last line printed is the run directory
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from workbench.notebook_runner import run_report

    index = run_report(
        _overrides(args.param), runs_root=args.runs, log=_log, keep_weights=args.keep_weights, code=args.code
    )
    _log("report written; open it in a browser:")
    print(index.resolve())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from workbench.training.configs import config_classes, load_config, override_value

    if args.help_config:
        for name, default, help_text in config_classes()[args.help_config].field_help():
            print(f"{name} (default {default!r}):\n    {help_text}")
        return 0
    if not args.config:
        raise WorkbenchError(
            "give a config file, e.g. workbench train configs/rlp_tiny.yaml (fields: --help-config rlp)"
        )
    overrides = {name: override_value(name, value) for name, value in args.set}
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    config = load_config(args.config, overrides)
    from workbench.training.launch import trainer_for

    trainer = trainer_for(config, resume=args.resume, log=_log)
    trainer.train()
    print(trainer.run_dir.resolve())  # the last line printed is the run directory
    return 0


def cmd_arena(args: argparse.Namespace) -> int:
    from workbench.arena import arena_table, load_arena, run_arena
    from workbench.training.configs import override_value

    overrides = {name: override_value(name, value) for name, value in args.set}
    designs = [d.strip() for d in args.designs.split(",")] if args.designs else None
    config, names = load_arena(args.config, overrides, designs)
    result = run_arena(config, names, args.output_dir, log=_log)
    _log(arena_table(result).round(3).to_string())
    print(Path(result["root"]).resolve())  # the last line printed is the arena directory
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from workbench.export import export_run

    out = export_run(
        args.run_dir, args.out_dir, push_to_hub=args.push_to_hub, overwrite=args.overwrite, log=_log, step=args.step
    )
    print(out.resolve())  # the last line printed is the exported directory
    return 0


def cmd_compare_runs(args: argparse.Namespace) -> int:
    from workbench.run_compare import compare_runs

    table = compare_runs(args.run_a, args.run_b, args.step_a, args.step_b)
    print(f"A = {args.run_a}\nB = {args.run_b}")
    signed = {"A - B"}  # a difference carries its sign; means and the SE print plainly
    print(
        table.to_string(
            formatters={
                c: (lambda v: f"{v:+.4f}") if c in signed else (lambda v: f"{v:.4f}")
                for c in table.columns
                if table[c].dtype.kind == "f"
            }
        )
    )
    if args.json_out:
        Path(args.json_out).write_text(table.reset_index().to_json(orient="records", indent=1))
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    import importlib.util
    import os
    import subprocess

    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocs_jupyter") is None:
        raise WorkbenchError(
            "the site needs mkdocs-material, mkdocs-jupyter and mkdocstrings: pip install -e '.[docs]' "
            "(scripts/install.sh installs them)"
        )
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    if args.report:
        report = Path(args.report)
        if not report.is_dir():
            raise WorkbenchError(f"--report {report}: no such folder (a `workbench report` folder, runs/report-<time>)")
        env["WORKBENCH_DOCS_REPORT"] = str(report.resolve())
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "serve" if args.serve else "build",
        "--strict",
        "-f",
        str(root / "mkdocs.yml"),
    ]
    if args.out and not args.serve:
        command += ["-d", str(Path(args.out).resolve())]
    done = subprocess.run(command, env=env, cwd=root)
    if done.returncode == 0 and not args.serve:
        site = Path(args.out).resolve() if args.out else root / "site"
        _log("site built; open it in a browser:")
        print(site / "index.html")
    return done.returncode


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {
            "score": cmd_score,
            "compare": cmd_compare,
            "run": cmd_run,
            "report": cmd_report,
            "train": cmd_train,
            "arena": cmd_arena,
            "export": cmd_export,
            "compare-runs": cmd_compare_runs,
            "docs": cmd_docs,
        }
        return commands[args.command](args)
    except WorkbenchError as exc:
        print(f"workbench {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"workbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
