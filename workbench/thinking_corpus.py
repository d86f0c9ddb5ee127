"""A generated corpus in which thoughts already appear inside ordinary text: the warm start's training data.

On the bundled base models a thought never helps: they have never seen `<think> ... </think>` inside text, so the
markers break it and cost nats whatever the thought says (shared/reference/rewards.md). Work that augments
pretraining text with thoughts (arXiv 2509.20186) and scratchpads on small models (arXiv 2112.00114) suggests a
short warm start on text where thoughts carry useful intermediate results. This module writes such text.

A document is a short worksheet of problems - arithmetic stories, unit conversions, counting, comparisons, dates,
look-ups of a fact stated earlier, code-like variable chains - each ending in "Answer: X." where X is **one token**
(a digit, or a weekday or name), so RLP's single-next-token reward covers the whole answer. Every problem is built
from its answer backwards, so the answers are spread evenly and a model cannot guess them without computing.

The JSONL keeps one plain text per document and says where the answers and the thoughts go:

    text        the document with no thought in it (what RLP and the evaluation read; thoughts are inserted in id space)
    answers     [[start, end], ...]: character spans of the answer tokens (the `marked` position spec reads them)
    answer_thoughts  [{"scratch": ..., "restate": ...}, ...]: both styles of thought for each answer (probes read them)
    thoughts    [{"at": start, "text": ..., "style": ...}, ...]: a thought written just before an answer (the warm
                start inserts it between the answer's token and the one before, exactly where RLP samples one)

Thought styles (the mixture gives RL a choice to make): `scratch`, a correct short scratchpad that ends with the
result; `restate`, a restatement of the question that computes nothing. Some answers have no thought, and some
documents have none at all, so the no-think prediction stays calibrated.

    python -m workbench.thinking_corpus            # rewrites data/thinking/{train,eval}.jsonl and the card
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError

# every name and weekday is one token after a space in both bundled tokenizers (a test checks), so a name can be an answer
NAMES = [
    "Ann",
    "Ben",
    "Dev",
    "Ella",
    "Finn",
    "Hugo",
    "Iris",
    "Jack",
    "Maya",
    "Noah",
    "Pablo",
    "Rosa",
    "Sam",
    "Tara",
    "Vera",
    "Will",
    "Tom",
    "Max",
    "Lily",
    "Emma",
    "Mark",
    "Paul",
    "Kate",
    "Lucy",
    "Jane",
    "Nina",
    "Omar",
    "Ruth",
]
THINGS = [
    "apples",
    "pens",
    "stamps",
    "marbles",
    "cards",
    "books",
    "shells",
    "coins",
    "stickers",
    "cookies",
    "eggs",
    "beads",
]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
ANSWER_LEADS = ["Answer:", "Answer:", "Answer:", "The answer is"]
STYLES = ("scratch", "restate", "slip")
RESTATE_LEAD = "The question"  # every restatement starts so, and no scratchpad does: `thought_style` reads it back
INTROS = [
    "Practice sheet {n}. Work out each problem, then write the answer.",
    "Homework, set {n}. Short problems about everyday things.",
    "Quiz {n}. Read each question carefully before you answer.",
    "Warm-up exercises, page {n}.",
    "Puzzle corner {n}: a few quick questions.",
]
OUTROS = ["", "", "Well done: check your answers with a friend.", "End of the sheet.", "Next time: longer problems."]


@dataclass(frozen=True)
class Problem:
    """One problem: its question, the answer token's text, and the two thought styles for it."""

    family: str
    question: str
    answer: str  # the answer's text, one token in the bundled tokenizers (a digit, a weekday, a name)
    scratch: str  # a correct scratchpad that ends with the result
    restate: str  # a restatement of the question that computes nothing
    slip: str  # the scratchpad with one slip (a step skipped or repeated, a ball missed): it ends with a wrong result


def _steps(start: int, count: int, step: int = 1) -> str:
    """`count` unit steps from `start`, each with its number: "12 is 1, 11 is 2, 10 is 3" (13 take away 3).

    Every scratchpad is written in this one step grammar, "V is k", so that each token is a local rule a small model
    can learn from a few hundred examples: the value is the last value plus or minus `step`, the counter is the last
    counter plus one, and the walk stops when the counter reaches a number stated just before it. A first version
    wrote bare values ("12, 11, 10"); the warm-started Gemma then lost count and its own scratchpads were right at
    only about half of the held-out answers (dates 50 %, counting 8 %)."""
    return ", ".join(f"{start + step * k} is {k}" for k in range(1, count + 1))


def _slipped_steps(start: int, count: int, step: int, off: int) -> str:
    """`_steps` with one slip in its last step: the value moves by `off` too far (a skipped or repeated value), so the
    walk ends at start + step * count + off - the kind of mistake the warm-started model makes when it loses count."""
    walk = [f"{start + step * k} is {k}" for k in range(1, count)]
    return ", ".join(walk + [f"{start + step * count + off} is {count}"])


def _off_by_one(answer: int, low: int = 0, high: int = 9) -> int:
    """-1 or +1, whichever keeps answer + off a one-token answer in [low, high] (down first)."""
    return -1 if answer - 1 >= low else 1


def _arithmetic_chain(rng: random.Random) -> Problem:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    answer = rng.randrange(10)
    lost = rng.randint(1, 2)  # at most four unit steps: the scratchpad stays within a 48-token thought
    given = rng.randint(1, 2)
    start = answer + lost + given
    first = start - given
    off = _off_by_one(answer)
    q = (
        f"{name} has {start} {thing}. {name} gives {given} to a friend and then loses {lost}. "
        f"How many {thing} does {name} have now?"
    )
    return Problem(
        "arithmetic",
        q,
        str(answer),
        f"{start} take away {given}: {_steps(start, given, -1)}. {first} take away {lost}: "
        f"{_steps(first, lost, -1)}. So {answer}",
        f"The question asks how many {thing} {name} has after giving some away and losing some.",
        f"{start} take away {given}: {_steps(start, given, -1)}. {first} take away {lost}: "
        f"{_slipped_steps(first, lost, -1, off)}. So {answer + off}",
    )


def _groups(rng: random.Random) -> Problem:
    thing = rng.choice(THINGS)
    a = rng.randint(2, 3)
    b = rng.randint(1, 9 // a)
    extra = rng.randint(1, min(2, 9 - a * b)) if a * b < 9 else 0
    answer = a * b + extra
    q = (
        f"There are {a} boxes with {b} {thing} in each box, and {extra} loose {thing} on the table. "
        f"How many {thing} are there in all?"
    )
    boxes = ", ".join(f"{b * k} in {k}" for k in range(1, a + 1))  # running total after box k: stop at box a
    more = f" {a * b} plus {extra}: {_steps(a * b, extra)}." if extra else ""
    off = _off_by_one(answer, low=1)
    if extra:  # the slip: one step of the loose ones too many or too few
        slip = f"{a} boxes of {b}: {boxes}. {a * b} plus {extra}: {_slipped_steps(a * b, extra, 1, off)}. So {answer + off}"
    else:  # the slip: the last box's running total off by one
        slipped = ", ".join([f"{b * k} in {k}" for k in range(1, a)] + [f"{b * a + off} in {a}"])
        slip = f"{a} boxes of {b}: {slipped}. So {answer + off}"
    return Problem(
        "groups",
        q,
        str(answer),
        f"{a} boxes of {b}: {boxes}.{more} So {answer}",
        f"The question asks for all the {thing}, in the boxes and on the table.",
        slip,
    )


# (small unit, big unit, small units in one big one): factors whose multiples a small model knows by heart
# (multiples of 60 are left out: the first warm start wrote "60, 120, 180" wrongly at most held-out answers)
UNITS = [
    ("cents", "dollars", 100),
    ("socks", "pairs", 2),
    ("shoes", "pairs", 2),
    ("cents", "nickels", 5),
    ("cents", "dimes", 10),
    ("years", "decades", 10),
    ("days", "fortnights", 14),
]


def _conversion(rng: random.Random) -> Problem:
    small, big, factor = rng.choice(UNITS)
    # the scratchpad lists every multiple: keep it within a 48-token thought (short multiples allow more of them)
    answer = rng.randint(1, 6 if factor <= 10 else 4)
    q = f"How many {big} are {answer * factor} {small}?"
    multiples = ", ".join(f"{factor * k} is {k}" for k in range(1, answer + 1))  # stop at the amount asked about
    off = _off_by_one(answer, low=1)  # the slip: stop one multiple early (or late)
    slipped = ", ".join(f"{factor * k} is {k}" for k in range(1, answer + off + 1))
    return Problem(
        "conversion",
        q,
        str(answer),
        f"{answer * factor} {small} in {big} of {factor}: {multiples}. So {answer}",
        f"The question asks to turn {small} into {big}.",
        f"{answer * factor} {small} in {big} of {factor}: {slipped}. So {answer + off}",
    )


def _counting(rng: random.Random) -> Problem:
    target = rng.choice(COLOURS)
    others = [c for c in COLOURS if c != target]
    answer = rng.randint(0, 5)
    items = [target] * answer + [rng.choice(others) for _ in range(rng.randint(max(1, 2 - answer), 7 - answer))]
    rng.shuffle(items)
    q = f"A bag holds these balls: {', '.join(items)}. How many {target} balls are in the bag?"
    seen, walk = 0, []
    for item in items:  # the list copied ball by ball, each with the running count (written every time: no memory)
        seen += item == target
        walk.append(f"{item} {seen}")
    # the slip: the first ball of the colour not counted, or (with none of it) the first ball counted as if it were
    miss = items.index(target) if answer else 0
    seen, slipped = 0, []
    for i, item in enumerate(items):
        seen += (item == target) != (i == miss)
        slipped.append(f"{item} {seen}")
    return Problem(
        "counting",
        q,
        str(answer),
        f"{target} balls: {', '.join(walk)}. So {answer}",
        f"The question asks how many of the balls are {target}.",
        f"{target} balls: {', '.join(slipped)}. So {seen}",
    )


def _difference(rng: random.Random) -> Problem:
    a_name, b_name = rng.sample(NAMES, 2)
    answer = rng.randint(1, 5)
    younger = rng.randint(3, 30)
    older = younger + answer
    q = f"{a_name} is {older} years old and {b_name} is {younger}. How many years older is {a_name} than {b_name}?"
    walk = _steps(younger, answer)  # stop when the value reaches the older age
    off = _off_by_one(answer, low=1)  # the slip: stop one step early (or late)
    return Problem(
        "difference",
        q,
        str(answer),
        f"from {younger} up to {older}: {walk}. So {answer}",
        f"The question compares the ages of {a_name} and {b_name}.",
        f"from {younger} up to {older}: {_steps(younger, answer + off)}. So {answer + off}",
    )


def _comparison(rng: random.Random) -> Problem:
    a_name, b_name = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    x, y = rng.sample(range(2, 40), 2)
    first_more = rng.random() < 0.5
    x, y = (max(x, y), min(x, y)) if first_more else (min(x, y), max(x, y))
    winner = a_name if x > y else b_name
    q = f"{a_name} has {x} {thing} and {b_name} has {y} {thing}. Who has more {thing}?"
    bigger = max(x, y)
    loser = b_name if winner == a_name else a_name  # the slip: the smaller number taken for the bigger
    return Problem(
        "comparison",
        q,
        " " + winner,
        f"{a_name} {x}, {b_name} {y}. {bigger} is more. So {winner}",
        f"The question compares how many {thing} {a_name} and {b_name} have.",
        f"{a_name} {x}, {b_name} {y}. {min(x, y)} is more. So {loser}",
    )


def _dates(rng: random.Random) -> Problem:
    today = rng.randrange(7)
    ahead = rng.randint(2, 6)
    day = DAYS[(today + ahead) % 7]
    q = f"Today is {DAYS[today]}. What day of the week will it be in {ahead} days?"
    walk = ", ".join(f"{DAYS[(today + k) % 7]} is {k}" for k in range(1, ahead + 1))
    # the slip: the last day skipped, so the walk ends one day too late
    slipped = ", ".join(
        [f"{DAYS[(today + k) % 7]} is {k}" for k in range(1, ahead)] + [f"{DAYS[(today + ahead + 1) % 7]} is {ahead}"]
    )
    return Problem(
        "dates",
        q,
        " " + day,
        f"{DAYS[today]} plus {ahead}: {walk}. So {day}",
        f"The question asks for the day {ahead} days after {DAYS[today]}.",
        f"{DAYS[today]} plus {ahead}: {slipped}. So {DAYS[(today + ahead + 1) % 7]}",
    )


def _lookup(rng: random.Random) -> Problem:
    colours = rng.sample(COLOURS, 4)
    counts = [rng.randrange(10) for _ in colours]
    which = rng.randrange(4)
    thing = rng.choice(THINGS)
    facts = " ".join(f"The {c} box holds {n} {thing}." for c, n in zip(colours, counts))
    q = f"{facts} Nobody opens the boxes today. How many {thing} are in the {colours[which]} box?"
    wrong = next((n for n in counts if n != counts[which]), counts[which] + _off_by_one(counts[which]))
    return Problem(
        "lookup",
        q,
        str(counts[which]),
        f"the {colours[which]} box holds {counts[which]}",
        f"The question asks about the {colours[which]} box.",
        f"the {colours[which]} box holds {wrong}",
    )  # the slip: another box's count read


def _variables(rng: random.Random) -> Problem:
    answer = rng.randrange(10)
    c_minus = rng.randint(1, 2)
    b = answer + c_minus
    a_plus = rng.randint(1, min(2, b))
    a = b - a_plus
    off = _off_by_one(answer)
    q = f"In the program below, what does print show?\n    a = {a}\n    b = a + {a_plus}\n    c = b - {c_minus}\n    print(c)"
    return Problem(
        "variables",
        q,
        str(answer),
        f"b = {a} plus {a_plus}: {_steps(a, a_plus)}. c = {b} take away {c_minus}: {_steps(b, c_minus, -1)}. "
        f"So {answer}",
        "The question asks what the program prints.",
        f"b = {a} plus {a_plus}: {_steps(a, a_plus)}. c = {b} take away {c_minus}: "
        f"{_slipped_steps(b, c_minus, -1, off)}. So {answer + off}",
    )


# the conclusion a scratchpad ends with ("... So 6", "So Monday."), and a bare statement of an answer
_CONCLUSION = re.compile(r"(?:^|(?<=[.,;:])\s*)So\s+[^.]*\.?\s*$")
_BARE_ANSWER = re.compile(r"^(?:the answer is|answer:?)\s*[^.]*\.?$", re.IGNORECASE)
THOUGHT_KINDS = ("scratch", "restate", "guess")


def thought_style(text: str) -> str:
    """The style of a thought, written by the corpus or sampled from a warm-started model: 'restate' (starts with the
    restatement's lead, in either case), 'scratch' (at least one counted step: besides its conclusion, a clause of
    three or more words that works with a number, e.g. "5 is 1, 10 is 2" or "the white box holds 7") or 'guess'
    (anything else: a bare "So 4", "4", "The answer is 4", or words that compute nothing). A slip is a scratchpad in
    style: only its result tells it apart."""
    t = text.strip()
    if t.lower().startswith(RESTATE_LEAD.lower()):  # RL drifts to "the question asks ..." as well
        return "restate"
    work = _BARE_ANSWER.sub("", _CONCLUSION.sub("", t).strip()).strip()
    return "scratch" if any(ch.isdigit() for ch in work) and len(work.split()) >= 3 else "guess"


def style_stats(texts: list[str], rewards: list[float], closed_by: list[str], prefix: str = "") -> dict[str, float]:
    """Per thought style (`thought_style`): how many thoughts, their mean reward, and the share of them that hit the
    token budget (a scratchpad cut off before its result), keyed `{prefix}n_{style}`, `{prefix}reward_{style}_mean`,
    `{prefix}share_{style}_at_budget`; a style with no thought has a count of 0 and no mean."""
    styles = [thought_style(t) for t in texts]
    out: dict[str, float] = {}
    for kind in THOUGHT_KINDS:
        picked = [i for i, s in enumerate(styles) if s == kind]
        out[f"{prefix}n_{kind}"] = len(picked)
        if picked:
            out[f"{prefix}reward_{kind}_mean"] = sum(rewards[i] for i in picked) / len(picked)
            out[f"{prefix}share_{kind}_at_budget"] = sum(closed_by[i] == "budget" for i in picked) / len(picked)
    return out


FAMILIES: dict[str, Callable[[random.Random], Problem]] = {
    "arithmetic": _arithmetic_chain,
    "groups": _groups,
    "conversion": _conversion,
    "counting": _counting,
    "difference": _difference,
    "comparison": _comparison,
    "dates": _dates,
    "lookup": _lookup,
    "variables": _variables,
}


@dataclass(frozen=True)
class CorpusSpec:
    """How a corpus is drawn: the same spec and seed give the same bytes."""

    documents: int = 600
    problems: tuple[int, int] = (2, 4)  # per document, inclusive
    share_no_thought_docs: float = 0.15  # documents with no thought at all
    share_no_thought: float = 0.15  # answers without a thought inside documents that have thoughts
    share_restate: float = 0.30  # of the thoughts: restatements that compute nothing (the rest are scratchpads)
    # of the scratchpads: ones with a slip (drawn from a generator of their own, so the rest of the corpus is the same
    # with or without them); the warm start trains the answer after a slip but not the slip itself
    share_slip: float = 0.25
    # the problem families drawn (None: all of FAMILIES); a trimmed corpus keeps the families a model can compute
    families: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families or ()) - set(FAMILIES))
        if unknown or self.families == ():
            raise WorkbenchError(
                f"unknown thinking-corpus families {', '.join(unknown) or '(none given)'}; "
                f"use some of: {', '.join(sorted(FAMILIES))}"
            )


def split_of(question: str) -> str:
    """Which split a question belongs to, by a hash of its text: a tenth of every family's questions are held out, so no
    held-out problem is ever trained on (several families have only a few dozen distinct questions)."""
    return "eval" if zlib.crc32(question.encode()) % 10 == 0 else "train"


def _problem_of_split(rng: random.Random, split: str, families: tuple[str, ...] | None = None) -> Problem:
    while True:  # redraw within the family until the question is one of this split's
        family = rng.choice(sorted(families or FAMILIES))
        for _ in range(1000):
            problem = FAMILIES[family](rng)
            if split_of(problem.question) == split:
                return problem


def make_document(rng: random.Random, doc_id: str, spec: CorpusSpec, split: str = "train") -> dict:
    """One document as a JSONL record (see the module docstring)."""
    n = rng.randint(*spec.problems)
    with_thoughts = rng.random() >= spec.share_no_thought_docs
    text = rng.choice(INTROS).format(n=rng.randint(1, 99))
    answers, thoughts, families, options = [], [], [], []
    slips = random.Random(f"slip:{doc_id}")
    for k in range(1, n + 1):
        problem = _problem_of_split(rng, split, spec.families)
        lead = rng.choice(ANSWER_LEADS)
        text += f"\n\n{k}. {problem.question}\n{lead}"
        # digits follow a space token (" 6" is ' ', '6' in both bundled tokenizers); word answers carry their space
        if not problem.answer.startswith(" "):
            text += " "
        start = len(text)
        text += problem.answer + "."
        answers.append([start, start + len(problem.answer)])
        options.append({"scratch": problem.scratch, "restate": problem.restate, "slip": problem.slip})
        families.append(problem.family)
        if with_thoughts and rng.random() >= spec.share_no_thought:
            style = "restate" if rng.random() < spec.share_restate else "scratch"
            if style == "scratch" and slips.random() < spec.share_slip:
                style = "slip"
            thoughts.append({"at": start, "text": getattr(problem, style), "style": style})
    outro = rng.choice(OUTROS)
    if outro:
        text += "\n\n" + outro
    return {
        "id": doc_id,
        "kind": "thinking",
        "title": f"worksheet {doc_id}",
        "text": text,
        "answers": answers,
        "answer_thoughts": options,
        "thoughts": thoughts,
        "families": families,
    }


def generate(split: str, seed: int, spec: CorpusSpec = CorpusSpec()) -> list[dict]:
    """The documents of one split: its own seed, and only questions of its own hash bucket (`split_of`)."""
    rng = random.Random(f"{split}:{seed}")
    return [make_document(rng, f"{split}-{i:04d}", spec, split) for i in range(spec.documents)]


SPLIT_SEEDS = {"train": 17, "eval": 29}
SPLIT_SIZES = {"train": 600, "eval": 60}


def draw_split(split: str, families: tuple[str, ...] | None = None) -> list[dict]:
    """One split as the repository ships it (its seed and size), optionally drawn again with only `families`: with
    every family it is the shipped file's documents, byte for byte."""
    return generate(split, SPLIT_SEEDS[split], CorpusSpec(documents=SPLIT_SIZES[split], families=families))


def write_corpus(out_dir: str | Path) -> dict[str, Path]:
    """Write data/thinking/{train,eval}.jsonl (the defaults are what the repository ships)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in SPLIT_SEEDS:
        docs = draw_split(split)
        path = out_dir / f"{split}.jsonl"
        path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
        paths[split] = path
    return paths


def main() -> None:
    from workbench.paths import data_dir

    for split, path in write_corpus(data_dir() / "thinking").items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
