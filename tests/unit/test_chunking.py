from __future__ import annotations

import itertools

from app.rag.types import FileType, Heading, ParsedDocument
from ingest.chunking import passage_text, split_document
from tests.fakes import FakeEmbedder

count = FakeEmbedder().count_tokens


def _doc(text: str, headings: tuple[Heading, ...] = ()) -> ParsedDocument:
    return ParsedDocument(text=text, file_type=FileType.TEXT, title="标题", headings=headings)


def test_every_chunk_is_an_exact_span_of_the_document() -> None:
    text = "\n\n".join(
        f"第{i}段。这是一个关于文件权限的句子！还有一个问题吗？有的；继续。" * 3 for i in range(30)
    )
    chunks = split_document(_doc(text), count_tokens=count, chunk_tokens=40, overlap_tokens=8)
    assert len(chunks) > 5
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.token_count <= 40
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_chinese_sentences_end_at_chinese_punctuation() -> None:
    sentence = "粘滞位保护目录中的文件不被其他用户删除。"
    text = sentence * 40
    chunks = split_document(_doc(text), count_tokens=count, chunk_tokens=50, overlap_tokens=0)
    assert len(chunks) > 1
    assert all(c.text.endswith("。") for c in chunks)


def test_neighbouring_chunks_overlap() -> None:
    text = " ".join(f"word{i}." for i in range(400))
    chunks = split_document(_doc(text), count_tokens=count, chunk_tokens=50, overlap_tokens=10)
    assert any(later.start < earlier.end for earlier, later in itertools.pairwise(chunks))


def test_chunks_never_cross_headings_and_carry_their_path() -> None:
    text = "# 用户管理\n\n## 添加用户\n\n使用 adduser 命令添加用户。\n\n## 删除用户\n\n使用 deluser 命令删除用户。\n"
    headings = (
        Heading(start=0, level=1, title="用户管理"),
        Heading(start=text.index("## 添加"), level=2, title="添加用户"),
        Heading(start=text.index("## 删除"), level=2, title="删除用户"),
    )
    chunks = split_document(_doc(text, headings), count_tokens=count, chunk_tokens=200, overlap_tokens=0)
    by_section = {c.section: c.text for c in chunks}
    assert "adduser" in by_section["用户管理 > 添加用户"]
    assert "deluser" in by_section["用户管理 > 删除用户"]
    assert "deluser" not in by_section["用户管理 > 添加用户"]
    # The bare top heading joins the section after it instead of becoming a chunk of its own.
    assert all(c.text.strip() != "# 用户管理" for c in chunks)


def test_passage_text_puts_title_and_section_in_front() -> None:
    assert passage_text(title="CHOWN(1)\t用户命令", section="选项", text="-c,\t--changes\n  报告") == (
        "CHOWN(1) 用户命令 / 选项\n-c, --changes 报告"
    )


def test_unpunctuated_chinese_is_cut_into_windows_of_the_target_size() -> None:
    # The probe's input: one character repeated, no punctuation, no line break. The recursive splitter cut it
    # into 23-character chunks (17 tokens where 256 was the target).
    text = "啊" * 20_000
    chunks = split_document(_doc(text), count_tokens=count, chunk_tokens=256, overlap_tokens=32)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    assert all(c.token_count <= 256 for c in chunks)
    assert min(c.token_count for c in chunks[:-1]) >= 200
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    # Neighbours overlap by about overlap_tokens and leave no gap.
    for earlier, later in itertools.pairwise(chunks):
        assert 0 < earlier.end - later.start <= 40


def test_an_unbroken_run_inside_prose_is_windowed_and_the_prose_around_it_split_as_before() -> None:
    prose = "粘滞位保护目录中的文件不被其他用户删除。" * 10
    blob = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 60  # base64-like: nowhere to split
    text = prose + blob + prose
    chunks = split_document(_doc(text), count_tokens=count, chunk_tokens=60, overlap_tokens=0)
    assert all(text[c.start : c.end] == c.text and c.token_count <= 60 for c in chunks)
    # The run goes on to the next separator: the blob and the unpunctuated sentence after it.
    run_start, run_end = len(prose), len(prose) + len(blob) + text[len(prose) + len(blob) :].index("。")
    in_run = [c for c in chunks if run_start <= c.start < run_end]
    assert in_run and in_run[0].start == run_start and in_run[-1].end == run_end
    # No chunk straddles the run's edges, and the prose still ends at Chinese full stops.
    prose_chunks = [c for c in chunks if c not in in_run]
    assert all(c.end <= run_start or c.start >= run_end for c in prose_chunks)
    assert all(c.text.endswith("。") for c in prose_chunks[:-1])
    # Every character of the document is in some chunk.
    covered = set().union(*(range(c.start, c.end) for c in chunks))
    assert covered == set(range(len(text)))


def test_repeated_text_is_found_in_order() -> None:
    # A document made of the same passages twice: the splitter's own offsets could jump to the second copy,
    # after which the next piece was "not found in its document".
    passages = "\n\n".join(f"第{i}节。文件权限由三组位组成，分别属于所有者、组和其他人。" for i in range(40))
    text = passages + "\n\n" + passages
    chunks = split_document(_doc(text), count_tokens=count, chunk_tokens=40, overlap_tokens=8)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    assert chunks[-1].end == len(text)


def test_chunking_cost_is_linear_in_the_text() -> None:
    # Measured in calls to the tokenizer, which is where the time goes: one per character, as the recursive
    # splitter made for unpunctuated text, would be 200,000 here.
    calls = 0

    def counting(text: str) -> int:
        nonlocal calls
        calls += 1
        return count(text)

    for size in (50_000, 200_000):
        calls = 0
        chunks = split_document(_doc("啊" * size), count_tokens=counting, chunk_tokens=256, overlap_tokens=32)
        assert calls <= 3 * len(chunks) + 2


def test_source_code_is_cut_at_line_ends_only_and_its_comments_are_not_headings() -> None:
    from ingest.parsing import parse_document

    lines = [f"    total += values[{i}]; log.debug('step {i}. done; next')  # keep the loop going" for i in range(60)]
    source = "# Settings loader.\ndef load(values):\n    total = 0\n" + "\n".join(lines) + "\n    return total\n"
    document = parse_document(source.encode(), FileType.CODE)
    assert document.headings == ()
    drafts = split_document(
        document, count_tokens=lambda text: len(text.split()), chunk_tokens=60, overlap_tokens=0
    )
    assert len(drafts) > 3
    for draft in drafts:
        # Chunks are stripped, so one may start after a line's indentation, never later in the line.
        assert not source[source.rfind("\n", 0, draft.start) + 1 : draft.start].strip()
        assert draft.end == len(source) or source[draft.end] == "\n"
