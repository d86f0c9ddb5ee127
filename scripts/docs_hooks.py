"""mkdocs hooks: the pages built from the code, so the site cannot drift from it.

- `reference/cli.md`: every `workbench` subcommand's `--help`, from `workbench.cli.build_parser()`;
- `reference/config.md`: every field of every trainer's config with its default and help string, from the dataclasses
  (`workbench train --help-config KIND` prints the same);
- `tutorials/NN_*.ipynb`: the five curated notebooks, rendered by mkdocs-jupyter. With `WORKBENCH_DOCS_REPORT=DIR`
  (a `workbench report` folder) the executed copies in it, with their outputs; otherwise the committed notebooks,
  which carry no outputs (`workbench docs --report DIR` sets it).

Nothing is written into docs/: the pages are generated in memory (`File.generated`), the notebooks linked from a
temporary folder.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]  # scripts/ is one level down
REPORT_ENV = "WORKBENCH_DOCS_REPORT"


def notebook_sources(report: str | None = None) -> dict[str, Path]:
    """Each curated notebook's file for the site: the executed copy in `report` where it has one, else the committed
    notebook."""
    from workbench.notebook_runner import CURATED

    report_dir = Path(report) if report else None
    out = {}
    for stem in CURATED:
        executed = report_dir / stem / f"{stem}.ipynb" if report_dir else None
        out[stem] = executed if executed is not None and executed.is_file() else ROOT / "notebooks" / f"{stem}.ipynb"
    return out


def cli_page() -> str:
    from workbench.cli import build_parser

    parser = build_parser()
    lines = [
        "# Command line",
        "",
        "Generated from `workbench.cli.build_parser()` at build time: what `workbench COMMAND --help` prints.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        buf = io.StringIO()
        with redirect_stdout(buf):
            command.print_help()
        lines += [f"## workbench {name}", "", "```text", buf.getvalue().rstrip(), "```", ""]
    return "\n".join(lines)


def config_page() -> str:
    from workbench.training.configs import config_classes

    lines = [
        "# Training config fields",
        "",
        "Generated from the config dataclasses at build time (`workbench train --help-config KIND` prints the same). "
        "A YAML config names its `trainer` and sets any of these fields; `--set FIELD VALUE` overrides one; an "
        "unknown field is an error.",
        "",
    ]
    for kind, cls in config_classes().items():
        lines += [
            f"## `trainer: {kind}` — `{cls.__module__}.{cls.__name__}`",
            "",
            "| field | default | what it does |",
            "|---|---|---|",
        ]
        for name, default, help_text in cls.field_help():
            cell = str(help_text).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{name}` | `{default!r}` | {cell} |".replace("``", "` `"))
        lines.append("")
    return "\n".join(lines)


BENCHMARKS_INTRO = """!!! note "Where these numbers come from"
    This page is `benchmarks/README.md`, ordered by question (one script each), each with its results by CPU kind or
    GPU and the command that measured them. Every result's raw files are kept under `benchmarks/results/<kind>-<date>/`;
    older runs stay there by date. Compare timings only within one run: the machines of one kind differ.

"""


def benchmarks_files(config) -> list[File]:
    """benchmarks/README.md as benchmarks/index.md, with the images it shows (under benchmarks/results/)."""
    import re

    text = (ROOT / "benchmarks" / "README.md").read_text()
    out = [File.generated(config, "benchmarks/index.md", content=BENCHMARKS_INTRO + text)]
    for target in sorted(set(re.findall(r"\]\((results/[^)\s]+\.(?:png|svg))\)", text))):
        out.append(File.generated(config, f"benchmarks/{target}", abs_src_path=str(ROOT / "benchmarks" / target)))
    return out


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "reference/cli.md", content=cli_page()))
    files.append(File.generated(config, "reference/config.md", content=config_page()))
    for f in benchmarks_files(config):
        files.append(f)
    # mkdocs-jupyter reads a notebook through its File's src_dir, so each one is linked into a temporary folder laid out
    # as the site is (tutorials/NN_*.ipynb) and added as a plain File from there
    global _LINKS
    _LINKS = Path(tempfile.mkdtemp(prefix="workbench-docs-"))
    (_LINKS / "tutorials").mkdir()
    for stem, path in notebook_sources(os.environ.get(REPORT_ENV)).items():
        (_LINKS / "tutorials" / f"{stem}.ipynb").symlink_to(path.resolve())
        files.append(File(f"tutorials/{stem}.ipynb", str(_LINKS), config["site_dir"], config["use_directory_urls"]))
    return files


_LINKS: Path | None = None


def on_post_build(config) -> None:
    if _LINKS is not None:
        shutil.rmtree(_LINKS, ignore_errors=True)
