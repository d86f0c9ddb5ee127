"""Documents and positions: the shipped corpus, user files, hub datasets, and which t to score.

A position t is the index of the target token x_t in a tokenised document; its context is ids[:t].
Position specs:
    all             every t >= 1
    every:K         t = K, 2K, 3K, ...
    random:N        N distinct positions drawn with the seed
    top-entropy:N   the N positions where the teacher's no-think entropy is highest
    at:T1,T2,...    the given positions
    marked          the document's marked answer tokens (a JSONL "answers" field: character spans); marked:N draws N

A document may also say where thoughts belong ("thoughts": [{"at": char, "text": ..., "style": ...}]): the warm start
(`interleave_thoughts`) splices them into the token ids exactly where RLP inserts a sampled thought.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.paths import data_dir

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    kind: str = "text"
    title: str = ""
    answers: tuple[tuple[int, int], ...] = ()  # character spans of marked answer tokens (the `marked` positions)
    thoughts: tuple[tuple[int, str, str], ...] = ()  # (character offset, thought text, style) written into the text
    # per answer, the thoughts that could precede it, as (style, text) pairs (the thinking corpus's probes)
    answer_thoughts: tuple[tuple[tuple[str, str], ...], ...] = ()
    # per answer, the problem family it belongs to (the thinking corpus's "families": arithmetic, dates, ...)
    families: tuple[str, ...] = ()


class DocumentIds(list):
    """A document's token ids (a plain list of ints to every reader) that also knows its marked answer positions
    (token indices t, so `ids[t]` is an answer token) and its document id."""

    def __init__(
        self,
        ids,
        marked: Sequence[int] = (),
        doc_id: str = "",
        trained: Sequence[int] | None = None,
        families: Sequence[str] = (),
    ) -> None:
        super().__init__(ids)
        self.marked = tuple(int(t) for t in marked if 1 <= t < len(self))
        # marked position -> its problem family, where the document names them (one per marked answer, in order)
        self.families = {int(t): f for t, f in zip(marked, families) if 1 <= t < len(self)}
        self.doc_id = doc_id
        # the targets t a next-token loss trains (None: every t >= 1); the warm start keeps thoughts and answers
        self.trained = None if trained is None else tuple(int(t) for t in trained if 1 <= t < len(self))


def load_corpus(split: str = "train") -> list[Document]:
    """The corpus shipped in data/corpus: 'train' (40 documents) or 'eval' (8 held-out documents)."""
    if split not in SPLITS:
        raise WorkbenchError(f"unknown corpus split {split!r}; use one of: {', '.join(SPLITS)}")
    return load_documents(data_dir() / "corpus" / f"{split}.jsonl")


def load_thinking_corpus(split: str = "train") -> list[Document]:
    """The generated thought-interleaved corpus in data/thinking (workbench/thinking_corpus.py): 'train' or 'eval'."""
    if split not in SPLITS:
        raise WorkbenchError(f"unknown thinking-corpus split {split!r}; use one of: {', '.join(SPLITS)}")
    return load_documents(data_dir() / "thinking" / f"{split}.jsonl")


def load_documents_spec(spec: str) -> list[Document]:
    """Documents from a config's spec: corpus:train, corpus:eval, thinking:train, thinking:eval, or a .txt/.jsonl
    file or directory; several joined with '+' (e.g. thinking:train+corpus:train) are read one after the other.
    thinking:SPLIT?families=F1,F2 draws that split again with only those problem families (same seed, size and
    held-out rule; `thinking_corpus.FAMILIES` lists them): the trimmed corpus a warm start can learn to compute."""
    if "+" in spec and not Path(spec).expanduser().exists():
        return [doc for part in spec.split("+") for doc in load_documents_spec(part.strip())]
    if spec in ("corpus:train", "corpus:eval"):
        return load_corpus(spec.split(":")[1])
    if spec in ("thinking:train", "thinking:eval"):
        return load_thinking_corpus(spec.split(":")[1])
    if spec.startswith("thinking:") and "?" in spec:
        return _drawn_thinking_corpus(spec)
    return load_documents(spec)


def _drawn_thinking_corpus(spec: str) -> list[Document]:
    from workbench import thinking_corpus  # the generator (pure Python), read only for a spec that asks for it

    split, _, query = spec.removeprefix("thinking:").partition("?")
    key, _, value = query.partition("=")
    if split not in SPLITS or key != "families" or not value:
        raise WorkbenchError(
            f"data spec {spec!r}: write thinking:SPLIT?families=F1,F2 with SPLIT one of {', '.join(SPLITS)} "
            f"(families: {', '.join(sorted(thinking_corpus.FAMILIES))})"
        )
    families = tuple(f.strip() for f in value.split(","))
    return [document_from_record(r) for r in thinking_corpus.draw_split(split, families)]


def _read_text(path: Path) -> str:
    if not path.exists():
        raise WorkbenchError(f"no such file: {path}")
    if path.is_dir():
        raise WorkbenchError(f"{path} is a directory; pass a .txt or .jsonl file")
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise WorkbenchError(f"{path} looks binary (it contains NUL bytes); pass a UTF-8 text or JSONL file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkbenchError(f"{path} is not UTF-8 text (byte {exc.start} is invalid)") from exc
    if not text.strip():
        raise WorkbenchError(f"{path} is empty")
    return text


def jsonl_objects(path: Path, text: str) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) for each non-blank line; a line that is not JSON is a one-line error."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"{path}:{lineno} is not valid JSON ({exc.msg})") from exc


DOCUMENT_SUFFIXES = (".txt", ".jsonl")


def load_documents(path: str | Path) -> list[Document]:
    """Documents from a .jsonl file (one object per line with a "text" field), a plain text file (one document), or
    a directory of such files (all .txt/.jsonl files below it, in sorted order of their relative paths; hidden
    files and folders skipped)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _load_directory(path)
    text = _read_text(path)
    if path.suffix != ".jsonl":
        return [Document(id=path.stem, text=text.strip("\n"), kind="text", title=path.name)]
    docs: list[Document] = []
    for lineno, obj in jsonl_objects(path, text):
        docs.append(document_from_record(obj, f"{path}:{lineno}", f"{path.stem}-{lineno}"))
    if not docs:
        raise WorkbenchError(f"{path} holds no documents")
    return docs


def document_from_record(obj: object, where: str = "a document", default_id: str = "doc") -> Document:
    """A Document from one JSONL record (its fields checked; a bad one is a one-line error naming `where`)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
        raise WorkbenchError(f'{where} needs a non-empty string field "text"')
    return Document(
        id=str(obj.get("id", default_id)),
        text=obj["text"],
        kind=str(obj.get("kind", "text")),
        title=str(obj.get("title", "")),
        answers=_answers(obj, where),
        thoughts=_thoughts(obj, where),
        answer_thoughts=_answer_thoughts(obj, where),
        families=_families(obj, where),
    )


def _answers(obj: dict, where: str) -> tuple[tuple[int, int], ...]:
    spans = obj.get("answers", [])
    n = len(obj["text"])
    ok = isinstance(spans, list) and all(
        isinstance(s, list)
        and len(s) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in s)
        and 0 < s[0] < s[1] <= n
        for s in spans
    )
    if not ok:
        raise WorkbenchError(f'{where}: "answers" must be a list of [start, end] character spans inside "text"')
    return tuple((s[0], s[1]) for s in spans)


def _thoughts(obj: dict, where: str) -> tuple[tuple[int, str, str], ...]:
    items = obj.get("thoughts", [])
    n = len(obj["text"])
    ok = isinstance(items, list) and all(
        isinstance(x, dict)
        and isinstance(x.get("at"), int)
        and not isinstance(x.get("at"), bool)
        and 0 < x["at"] < n
        and isinstance(x.get("text"), str)
        for x in items
    )
    if not ok:
        raise WorkbenchError(f'{where}: "thoughts" must be a list of {{"at": character offset, "text": thought}}')
    return tuple((x["at"], x["text"], str(x.get("style", ""))) for x in sorted(items, key=lambda x: x["at"]))


def _families(obj: dict, where: str) -> tuple[str, ...]:
    items = obj.get("families", [])
    if not (isinstance(items, list) and all(isinstance(f, str) for f in items)) or len(items) not in (
        0,
        len(obj.get("answers", [])),
    ):
        raise WorkbenchError(f'{where}: "families" must be one family name per answer')
    return tuple(items)


def _answer_thoughts(obj: dict, where: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    items = obj.get("answer_thoughts", [])
    ok = (
        isinstance(items, list)
        and len(items) in (0, len(obj.get("answers", [])))
        and all(
            isinstance(x, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in x.items()) for x in items
        )
    )
    if not ok:
        raise WorkbenchError(f'{where}: "answer_thoughts" must be one {{style: thought}} mapping per answer')
    return tuple(tuple(sorted(x.items())) for x in items)


def load_thoughts(path: str | Path) -> list[tuple[int, str | list[int]]]:
    """Given thoughts from a .jsonl file: one {"position": t, "thought": "text"} object per line ("thought" may also
    be a list of token ids); several lines may share a position. Returns (position, thought) pairs in file order."""
    path = Path(path).expanduser()
    pairs: list[tuple[int, str | list[int]]] = []
    for lineno, obj in jsonl_objects(path, _read_text(path)):
        if not isinstance(obj, dict) or "position" not in obj or "thought" not in obj:
            raise WorkbenchError(f'{path}:{lineno} needs the fields "position" (an integer) and "thought" (text)')
        t, thought = obj["position"], obj["thought"]
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise WorkbenchError(f'{path}:{lineno}: "position" must be an integer >= 1, got {t!r}')
        ids_ok = isinstance(thought, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in thought)
        if not isinstance(thought, str) and not ids_ok:
            raise WorkbenchError(f'{path}:{lineno}: "thought" must be text (or a list of token ids), got {thought!r}')
        pairs.append((t, thought))
    if not pairs:
        raise WorkbenchError(f"{path} holds no thoughts")
    return pairs


def _load_directory(root: Path) -> list[Document]:
    files = sorted(
        (
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix in DOCUMENT_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise WorkbenchError(f"{root} is a directory with no .txt or .jsonl files in it")
    docs: list[Document] = []
    for file in files:
        loaded = load_documents(file)
        if file.suffix == ".txt":  # a text file's id is its path inside the directory, so same-named files differ
            rel = file.relative_to(root).with_suffix("").as_posix()
            loaded = [Document(id=rel, text=d.text, kind=d.kind, title=d.title) for d in loaded]
        docs.extend(loaded)
    return docs


def pick_document(docs: Sequence[Document], which: str | int | None = None) -> Document:
    """A document by id, title or 0-based index; the first one when `which` is None."""
    if which is None or which == "":
        return docs[0]
    for doc in docs:
        if str(which) in (doc.id, doc.title):
            return doc
    if isinstance(which, int) or str(which).isdigit():
        index = int(which)
        if 0 <= index < len(docs):
            return docs[index]
    raise WorkbenchError(f"no document {which!r}; ids here: {', '.join(d.id for d in docs[:12])}")


def document_ref(spec: str, doc_id: str) -> str:
    """The one spelling of a document: the spec of the documents it is in, '#', its id (corpus:eval#math-11,
    thinking:eval#eval-0003, notes.jsonl#doc-2) - `find_document` reads it back."""
    return f"{spec}#{doc_id}"


def _old_document_ref(ref: str) -> str | None:
    """Today's spelling of a document reference written the old ways (eval:math-11, train:math-01,
    thinking:eval-0003, a bare corpus id math-01), or None."""
    head, colon, rest = ref.partition(":")
    if colon and head in SPLITS and rest:
        return document_ref(f"corpus:{head}", rest)
    if colon and head == "thinking" and rest.split("-")[0] in SPLITS:
        return document_ref(f"thinking:{rest.split('-')[0]}", rest)
    if not colon and not Path(ref).expanduser().exists():
        for split in SPLITS:
            if any(ref in (d.id, d.title) for d in load_corpus(split)):
                return document_ref(f"corpus:{split}", ref)
    return None


def find_document(ref: str) -> Document:
    """A document from its reference SPEC#ID: the documents of SPEC (a config's data spec - corpus:train,
    corpus:eval, thinking:train, thinking:eval - or a .txt/.jsonl path) and, after '#', an id, title or 0-based index
    among them (`corpus:eval#math-11`, `thinking:eval#eval-0003`, `notes.jsonl#2`; a file alone: its first document).
    The old spellings (`eval:math-11`, `thinking:eval-0003`, a bare `math-01`) still work, with a warning."""
    spec, hash_, which = ref.partition("#")
    if hash_:
        return pick_document(load_documents_spec(spec), which)
    new = _old_document_ref(ref)
    if new is not None:
        warnings.warn(
            f"document {ref!r}: write {new!r} (SPEC#ID, the spelling of data specs in configs)",
            FutureWarning,
            stacklevel=2,
        )
        return find_document(new)
    if Path(ref).expanduser().exists():
        return pick_document(load_documents(ref))
    raise WorkbenchError(
        f"no document {ref!r}: write SPEC#ID, e.g. corpus:train#math-01, corpus:eval#prose-11, "
        f"thinking:eval#eval-0001, or a .txt/.jsonl path (path#id for one of its documents)"
    )


def stream_hf_dataset(
    name: str,
    split: str = "train",
    text_field: str = "text",
    config: str | None = None,
    limit: int | None = None,
    data_files: str | list[str] | None = None,
) -> Iterator[Document]:
    """Documents streamed from a Hugging Face dataset (nothing is downloaded in full).

    `name` is a hub id (needs hub access) or a builder such as "json" / "text" with local `data_files`.
    """
    try:
        from datasets import load_dataset
    except ImportError as exc:
        raise WorkbenchError("streaming a hub dataset needs the datasets package: pip install datasets") from exc
    try:
        stream = load_dataset(name, config, split=split, streaming=True, data_files=data_files)
    except Exception as exc:  # datasets raises many types for an unreachable hub
        raise WorkbenchError(f"could not open dataset {name!r} on the hub: {str(exc).splitlines()[0]}") from exc
    for i, row in enumerate(stream):
        if limit is not None and i >= limit:
            return
        if text_field not in row:
            raise WorkbenchError(f"dataset {name!r} rows have no field {text_field!r}; fields: {sorted(row)}")
        yield Document(id=f"{name}-{i}", text=str(row[text_field]), kind="hub", title=name)


def tokenize(tokenizer, text: str, max_tokens: int | None = None) -> list[int]:
    """Token ids exactly as scored: BOS included when the tokenizer adds one."""
    ids = list(tokenizer(text).input_ids)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise WorkbenchError("the document is too short: it needs at least two tokens to have a target")
    return ids


# --------------------------------------------------------------------------- positions


@dataclass(frozen=True)
class PositionSpec:
    kind: str  # all | every | random | top-entropy | at | marked
    n: int = 0
    at: tuple[int, ...] = ()  # the positions of an 'at:T1,T2,...' spec

    @property
    def needs_entropy(self) -> bool:
        return self.kind == "top-entropy"

    def __str__(self) -> str:
        if self.kind == "at":
            return "at:" + ",".join(map(str, self.at))
        if self.kind == "marked" and not self.n:
            return "marked"
        return self.kind if self.kind == "all" else f"{self.kind}:{self.n}"


MIN_DOC_TOKENS = 16  # shorter documents leave no room for a context before a thought


def token_index_at(tokenizer, text: str, chars: Sequence[int]) -> list[int]:
    """For each character offset, the index of the token that starts there in `tokenize(text)` (BOS counted). An
    offset inside a token is an error: a marked answer or a thought must sit on a token boundary."""
    enc = tokenizer(text, return_offsets_mapping=True)
    starts = {}
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if b > a:
            starts.setdefault(a, i)
    out = []
    for c in chars:
        if c not in starts:
            raise WorkbenchError(
                f"character {c} ({text[max(0, c - 10) : c]!r}|{text[c : c + 10]!r}) is not at a token boundary"
            )
        out.append(starts[c])
    return out


def tokenize_document(tokenizer, doc: Document, max_tokens: int | None = None) -> DocumentIds:
    """A document's token ids as scored (`tokenize`), with its marked answer positions."""
    ids = tokenize(tokenizer, doc.text, max_tokens)
    marked = token_index_at(tokenizer, doc.text, [a for a, _ in doc.answers]) if doc.answers else []
    return DocumentIds(ids, marked, doc.id, families=doc.families)


def tokenize_documents(tokenizer, docs: Sequence[Document], max_tokens: int | None) -> list[DocumentIds]:
    """Token ids of each document, cut to `max_tokens`, leaving out those under MIN_DOC_TOKENS (training and the held-out
    evaluation read documents this way)."""
    ids = [tokenize_document(tokenizer, d, max_tokens) for d in docs]
    return [x for x in ids if len(x) >= MIN_DOC_TOKENS]


def interleave_thoughts(
    tokenizer,
    doc: Document,
    open_ids: Sequence[int],
    close_ids: Sequence[int],
    max_tokens: int | None = None,
    train_all: bool = True,
    read_only: Sequence[str] = (),
    thoughts: Sequence[tuple[int, str, str]] | None = None,
) -> DocumentIds:
    """The document's ids with its thoughts spliced in: ids[:t] + open + thought + close + ids[t:] at each thought's
    token t - the very sequence RLP scores when it samples that thought at t (thought text tokenised as given thoughts
    are, `encode(text)` without specials). Marked positions move with
    their tokens; the result is cut to `max_tokens`. `train_all=False` sets `trained` to the spliced tokens (opening
    marker, thought, closing marker) and every marked answer: what a loss needs to teach writing and reading
    thoughts, without the LM head on every question token. Thoughts of a `read_only` style are spliced in but their
    text is never a target (the model reads them without learning to write them); the tokens after them are.
    `thoughts` (char offset, text, style) replaces the document's own: which ones to splice is the recipe's choice
    (`warmstart_trainer.recipe_thoughts`)."""
    base = tokenize(tokenizer, doc.text)
    kept = list(doc.thoughts if thoughts is None else thoughts)
    at = token_index_at(tokenizer, doc.text, [c for c, _, _ in kept])
    marked = token_index_at(tokenizer, doc.text, [a for a, _ in doc.answers]) if doc.answers else []
    out: list[int] = []
    shift: list[tuple[int, int]] = []  # (token index in base, tokens inserted before it)
    spliced: list[int] = []  # indices in `out` of the inserted tokens
    unread: set[int] = set()  # indices in `out` of read-only thought text: never a target
    last = 0
    for t, (_, text, style) in zip(at, kept):
        out.extend(base[last:t])
        body = tokenizer.encode(text, add_special_tokens=False)
        inserted = [*open_ids, *body, *close_ids]
        spliced.extend(range(len(out), len(out) + len(inserted)))
        if style in read_only:
            unread.update(range(len(out) + len(open_ids), len(out) + len(open_ids) + len(body)))
        out.extend(inserted)
        shift.append((t, len(inserted)))
        last = t
    out.extend(base[last:])
    moved = [t + sum(n for s, n in shift if s <= t) for t in marked]
    if max_tokens is not None:
        out = out[:max_tokens]
    trained = None if train_all else sorted(set(spliced) | set(moved))
    if unread:
        trained = [t for t in (range(1, len(out)) if trained is None else trained) if t not in unread and t < len(out)]
    return DocumentIds(out, moved, doc.id, trained)


def parse_positions(spec: str) -> PositionSpec:
    """Parse 'all', 'every:K', 'random:N', 'top-entropy:N' or 'at:T1,T2,...' (explicit positions)."""
    spec = str(spec).strip()
    if spec in ("all", "marked"):
        return PositionSpec(spec)
    kind, sep, number = spec.partition(":")
    if kind == "at" and sep:
        items = [x.strip() for x in number.split(",")]
        if items and all(x.isdigit() and int(x) >= 1 for x in items):
            return PositionSpec("at", len(items), tuple(sorted(set(int(x) for x in items))))
    if kind in ("every", "random", "top-entropy", "marked") and sep and number.strip().isdigit() and int(number) >= 1:
        return PositionSpec(kind, int(number))
    raise WorkbenchError(
        f"unknown position spec {spec!r}; use all, every:K, random:N, top-entropy:N, marked, marked:N (K, N >= 1) or "
        "at:T1,T2,... (T >= 1)"
    )


def select_positions(
    spec: PositionSpec | str,
    n_tokens: int,
    seed: int = 0,
    entropy: Sequence[float] | None = None,
    marked: Sequence[int] | None = None,
) -> list[int]:
    """Target indices t in [1, n_tokens - 1], sorted. `marked`: the document's answer positions (DocumentIds.marked),
    which the `marked` spec needs."""
    spec = parse_positions(spec) if isinstance(spec, str) else spec
    candidates = range(1, n_tokens)
    if spec.kind == "marked":
        if not marked:
            raise WorkbenchError(
                "positions 'marked' need a document with marked answers (a JSONL \"answers\" field, "
                "e.g. thinking:eval); this one has none"
            )
        inside = sorted(t for t in set(marked) if 1 <= t < n_tokens)
        return inside if not spec.n else sorted(random.Random(seed).sample(inside, min(spec.n, len(inside))))
    if spec.kind == "all":
        return list(candidates)
    if spec.kind == "every":
        return list(range(spec.n, n_tokens, spec.n))
    if spec.kind == "random":
        return sorted(random.Random(seed).sample(list(candidates), min(spec.n, len(candidates))))
    if spec.kind == "at":
        outside = [t for t in spec.at if t >= n_tokens]
        if outside:
            raise WorkbenchError(f"positions {outside} lie past the document's last token (t <= {n_tokens - 1})")
        return list(spec.at)
    if entropy is None:
        raise WorkbenchError("top-entropy positions need the teacher's no-think entropies")
    ranked = sorted(candidates, key=lambda t: (-float(entropy[t]), t))
    return sorted(ranked[: spec.n])
