"""The command line answers a mistake with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WENDA_DATA_DIR", str(tmp_path / "data"))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def test_a_missing_query_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _run(
        capsys, "eval", "retrieval", "--collection", "c", "--queries", str(tmp_path / "none.jsonl")
    )
    assert code == 2 and "No such file" in err and "Traceback" not in err


def test_a_query_line_without_a_question_names_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"question": "a", "gold_sources": ["x"]}\n\n{"id": 3}\n', encoding="utf-8")
    from app.rag.evaluation import EvalFileError, load_queries

    with pytest.raises(EvalFileError, match=r"q\.jsonl:3: each line needs a \"question\""):
        load_queries(queries)
    queries.write_text("not json\n", encoding="utf-8")
    with pytest.raises(EvalFileError, match=r"q\.jsonl:1: not a JSON object"):
        load_queries(queries)


def test_an_unknown_collection_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _run(capsys, "ask", "what?", "--collection", "nope")
    assert (code, err) == (2, "wenda ask: collection 'nope' not found")
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "a"}\n', encoding="utf-8")
    code, err = _run(capsys, "eval", "answers", "--collection", "nope", "--questions", str(questions))
    assert (code, err) == (2, "wenda eval: collection 'nope' not found")


def test_ingest_reports_the_files_it_skipped(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import json

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("一个很短的文档。", encoding="utf-8")
    (folder / "b.xyz").write_bytes(b"\x00\x01binary")
    code = main(["ingest", str(folder), "--collection", "c"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 0 and (summary["files"], summary["unsupported"], summary["failed"]) == (1, 1, 0)
    assert f"skipped {folder / 'b.xyz'}: not a supported type" in captured.err


def test_feedback_export_and_train_lora_mistakes_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "sft.jsonl"
    code, err = _run(capsys, "feedback", "export", "--format", "sft", "-o", str(out))
    assert (code, err) == (0, "0 sft examples") and out.read_text() == ""
    code, err = _run(capsys, "feedback", "export", "--format", "dpo", "--collection", "nope")
    assert (code, err) == (2, "wenda feedback: collection 'nope' not found")
    with pytest.raises(SystemExit, match="not an ISO date"):
        main(["feedback", "export", "--format", "sft", "--since", "last week"])

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")
    code, err = _run(capsys, "train-lora", "--name", "mine", "--data", str(bad))
    assert code == 2 and "line 1: the last message must be the assistant's answer" in err
    code, err = _run(capsys, "train-lora", "--name", "mine")
    assert code == 2 and "no approved correction or up-voted answer to train on" in err
    code, err = _run(capsys, "train-lora", "--name", "auto", "--data", str(bad))
    assert code == 2 and "reserved" in err and "Traceback" not in err
