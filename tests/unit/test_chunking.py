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
