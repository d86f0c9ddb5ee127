from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workbench.data import document_ref, find_document, load_corpus, load_documents, parse_positions, select_positions
from workbench.errors import WorkbenchError


def test_corpus_has_forty_mixed_documents_and_a_disjoint_held_out_split():
    train, held_out = load_corpus("train"), load_corpus("eval")
    assert len(train) + len(held_out) >= 40
    kinds = {d.kind for d in train}
    assert {"math", "science", "code", "prose"} <= kinds
    assert {d.kind for d in held_out} == kinds
    assert not {d.id for d in train} & {d.id for d in held_out}
    assert not {d.text for d in train} & {d.text for d in held_out}


def test_find_document_by_spec_and_id(tmp_path):
    assert find_document("corpus:train#math-01").id == "math-01"
    assert find_document("corpus:eval#math-11").id == "math-11"
    assert find_document("thinking:eval#eval-0003").id == "eval-0003"
    assert find_document("corpus:eval#1").id == load_corpus("eval")[1].id  # a 0-based index among the spec's documents
    assert document_ref("corpus:eval", "math-11") == "corpus:eval#math-11"
    f = tmp_path / "note.txt"
    f.write_text("Water boils at 100 degrees Celsius at sea level.")
    assert find_document(str(f)).text.startswith("Water")
    assert find_document(f"{f}#0").text.startswith("Water")
    with pytest.raises(WorkbenchError, match="ids here"):
        find_document("corpus:train#math-11")  # held out: not in the training split
    with pytest.raises(WorkbenchError, match="SPEC#ID"):
        find_document("no-such-doc")


@pytest.mark.parametrize(
    "old,new",
    [
        ("eval:math-11", "corpus:eval#math-11"),
        ("math-01", "corpus:train#math-01"),
        ("math-11", "corpus:eval#math-11"),
        ("thinking:eval-0003", "thinking:eval#eval-0003"),
    ],
)
def test_old_document_spellings_still_work_and_say_the_new_one(old, new):
    with pytest.warns(FutureWarning, match=re.escape(repr(new))):
        assert find_document(old).id == find_document(new).id


@pytest.mark.parametrize(
    "content,message",
    [(b"", "empty"), (b"   \n", "empty"), (b"\x00\x01\x02abc", "binary"), (b"\xff\xfe\xfa text", "UTF-8")],
)
def test_bad_files_give_clear_errors(tmp_path, content, message):
    f = tmp_path / "doc.txt"
    f.write_bytes(content)
    with pytest.raises(WorkbenchError, match=message):
        load_documents(f)


def test_missing_file_and_bad_jsonl(tmp_path):
    with pytest.raises(WorkbenchError, match="no such file"):
        load_documents(tmp_path / "nope.txt")
    bad = tmp_path / "docs.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(WorkbenchError, match=":2 is not valid JSON"):
        load_documents(bad)
    bad.write_text(json.dumps({"body": "no text field"}) + "\n")
    with pytest.raises(WorkbenchError, match='"text"'):
        load_documents(bad)


def test_position_specs():
    assert select_positions("all", 6) == [1, 2, 3, 4, 5]
    assert select_positions("every:4", 13) == [4, 8, 12]
    r = select_positions("random:5", 50, seed=1)
    assert len(set(r)) == 5 and r == sorted(r) and all(1 <= t < 50 for t in r)
    assert r == select_positions("random:5", 50, seed=1)
    assert r != select_positions("random:5", 50, seed=2)
    entropy = [float("nan"), 0.1, 3.0, 0.2, 2.0, 0.3]
    assert select_positions("top-entropy:2", 6, entropy=entropy) == [2, 4]
    assert select_positions("random:99", 5) == [1, 2, 3, 4]
    assert select_positions("at:9,3,3", 10) == [3, 9]
    assert str(parse_positions("at:9,3")) == "at:3,9"
    with pytest.raises(WorkbenchError, match="past the document"):
        select_positions("at:3,12", 10)


@pytest.mark.parametrize(
    "spec", ["", "every", "every:0", "every:-2", "random:x", "top:3", "all:2", "top-entropy", "at:", "at:0", "at:3,x"]
)
def test_unknown_position_specs_are_rejected(spec):
    with pytest.raises(WorkbenchError, match="position spec"):
        parse_positions(spec)


@given(n_tokens=st.integers(2, 400), k=st.integers(1, 50), seed=st.integers(0, 10**6))
def test_positions_always_valid_targets(n_tokens, k, seed):
    for spec in (f"every:{k}", f"random:{k}", "all"):
        chosen = select_positions(spec, n_tokens, seed=seed)
        assert chosen == sorted(set(chosen))
        assert all(1 <= t < n_tokens for t in chosen)


def test_a_directory_is_a_corpus(tmp_path):
    """A folder of .txt/.jsonl files: every .txt a document, every .jsonl line one; sorted by relative path."""
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("second file")
    (tmp_path / "a.txt").write_text("first file")
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"id": "x", "text": "a line"}) + "\n" + json.dumps({"text": "another"})
    )
    (tmp_path / "skip.md").write_text("not a corpus file")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "h.txt").write_text("hidden")
    docs = load_documents(tmp_path)
    assert [d.id for d in docs] == ["a", "b/notes", "x", "c-2"]
    assert [d.text for d in docs] == ["first file", "second file", "a line", "another"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("nothing to read")
    with pytest.raises(WorkbenchError, match="no .txt or .jsonl files"):
        load_documents(empty)


def test_stream_hf_dataset_from_local_files(tmp_path):
    from workbench.data import stream_hf_dataset

    f = tmp_path / "rows.jsonl"
    f.write_text("\n".join(json.dumps({"body": f"document number {i}"}) for i in range(5)))
    docs = list(stream_hf_dataset("json", text_field="body", data_files=str(f), limit=3))
    assert [d.text for d in docs] == ["document number 0", "document number 1", "document number 2"]
    with pytest.raises(WorkbenchError, match="no field 'text'"):
        list(stream_hf_dataset("json", data_files=str(f)))


def test_runs_land_in_the_project_not_the_working_directory(tmp_path, monkeypatch):
    """A notebook opened from notebooks/ in JupyterLab must not write notebooks/runs/ (or runs/runs/)."""
    from workbench.run_dirs import PROJECT_ROOT, new_run_dir, runs_root

    monkeypatch.delenv("WORKBENCH_RUNS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert runs_root() == PROJECT_ROOT / "runs"
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "elsewhere"))
    made = new_run_dir("demo")
    assert made.parent == tmp_path / "elsewhere" and made.is_dir()


def test_training_data_may_be_a_directory(tmp_path):
    from workbench.training.trainer import load_docs

    (tmp_path / "one.txt").write_text("a document")
    (tmp_path / "two.txt").write_text("another document")
    assert [d.id for d in load_docs(str(tmp_path))] == ["one", "two"]
