from __future__ import annotations

from app.rag.citations import Passage, check_answer, cited_numbers, quote_matches, split_sentences

DOCUMENT = (
    "第一章 权限。\n给一个目录设置粘滞位将保护该目录内的文件不被其所有者之外的一个用户删除。"
    "/tmp 目录通常设置了粘滞位。\n"
    "第二章 网络。网络接口的配置文件位于 /etc/network/interfaces。"
)
STICKY_START = DOCUMENT.index("给一个目录")
NETWORK_START = DOCUMENT.index("网络接口")


def passages() -> list[Passage]:
    sticky = DOCUMENT[STICKY_START : DOCUMENT.index("\n第二章")]
    network = DOCUMENT[NETWORK_START:]
    return [
        Passage(number=1, chunk_id=11, document_id=1, source="a.txt", text=sticky, start=STICKY_START),
        Passage(number=2, chunk_id=12, document_id=1, source="a.txt", text=network, start=NETWORK_START),
    ]


def test_supported_citation_quotes_an_exact_span_of_the_document() -> None:
    checked = check_answer("粘滞位保护目录内的文件不被其所有者之外的用户删除 [1]。", passages())
    assert len(checked.citations) == 1
    citation = checked.citations[0]
    assert citation.chunk_id == 11 and citation.passage == 1
    assert "粘滞位" in citation.quote
    assert quote_matches(DOCUMENT, citation.start, citation.end, citation.quote)
    assert checked.sentences[0].supported and checked.text.endswith("[1]。")


def test_citing_the_wrong_passage_is_dropped_and_the_sentence_marked_unsupported() -> None:
    checked = check_answer("粘滞位保护目录内的文件不被其所有者之外的用户删除 [2]。", passages())
    assert checked.citations == ()
    assert checked.sentences[0].supported is False
    assert checked.dropped_markers == 1
    assert "[" not in checked.text


def test_forged_content_is_not_supported_by_any_passage() -> None:
    checked = check_answer("设置 SELinux 策略可以阻止所有用户删除文件 [1]。", passages())
    assert checked.citations == () and checked.supported_share == 0.0


def test_numbers_beyond_the_passages_are_dropped() -> None:
    checked = check_answer("The interfaces file holds the network configuration [7].", passages())
    assert checked.dropped_markers >= 1
    assert all(c.passage in (1, 2) for c in checked.citations)


def test_unmarked_sentence_finds_its_support_and_mixed_answers_are_judged_per_sentence() -> None:
    answer = "网络接口的配置文件位于 /etc/network/interfaces。月亮是奶酪做的 [1]。"
    checked = check_answer(answer, passages())
    assert [s.supported for s in checked.sentences] == [True, False]
    assert checked.citations[0].chunk_id == 12
    assert checked.supported_share == 0.5


def test_off_by_one_offsets_do_not_match() -> None:
    checked = check_answer("/tmp 目录通常设置了粘滞位 [1]。", passages())
    citation = checked.citations[0]
    assert quote_matches(DOCUMENT, citation.start, citation.end, citation.quote)
    assert not quote_matches(DOCUMENT, citation.start + 1, citation.end + 1, citation.quote)
    assert not quote_matches(DOCUMENT, citation.start - 1, citation.end, citation.quote)
    assert not quote_matches(DOCUMENT, -1, 5, DOCUMENT[:5])


def test_markers_and_sentences_are_parsed_in_both_languages() -> None:
    assert cited_numbers("它有作用【1】[2, 3][2]。") == [1, 2, 3]
    text = "First one. Second e.g. x.y [1]! Third. [2] 第三句。第四句？"
    assert [text[a:b] for a, b in split_sentences(text)] == [
        "First one.",
        "Second e.g. x.y [1]!",
        "Third. [2]",
        "第三句。",
        "第四句？",
    ]


def test_a_wrong_number_or_path_is_not_supported_however_similar_the_words() -> None:
    passage = [
        Passage(
            number=1,
            chunk_id=1,
            document_id=1,
            source="a.txt",
            start=0,
            text="自从每个用户都有自己的私人组之后，把umask设置成0002变得更安全了。配置文件是 /etc/login.defs。",
        )
    ]
    right = check_answer("把 umask 设置成 0002 变得更安全了 [1]。", passage)
    wrong = check_answer("把 umask 设置成 0022 变得更安全了 [1]。", passage)
    assert right.citations and right.sentences[0].supported
    assert wrong.citations == () and wrong.sentences[0].supported is False
    assert check_answer("配置文件是 /etc/login.defs [1]。", passage).citations
    assert check_answer("配置文件是 /etc/default/useradd [1]。", passage).citations == ()


def test_exact_tokens() -> None:
    from app.rag.citations import exact_tokens

    assert exact_tokens(
        "Run git branch -d topic, umask 0002, see /etc/fstab and v2.39.5 or --reference."
    ) == {
        "-d",
        "0002",
        "/etc/fstab",
        "v2.39.5",
        "--reference",
    }


def test_a_tiny_sentence_is_never_supported_by_chance() -> None:
    passage = [
        Passage(
            number=1, chunk_id=1, document_id=1, source="a.txt", start=0, text="There is no limit on uploads."
        )
    ]
    checked = check_answer("No [1].", passage)
    assert checked.citations == () and checked.supported_share == 0.0


def test_an_unmarked_sentence_gets_its_best_passage_not_the_first_good_enough() -> None:
    passages = [
        Passage(
            number=1,
            chunk_id=1,
            document_id=1,
            source="a.txt",
            start=0,
            text="Git stores snapshots of the project in a repository.",
        ),
        Passage(
            number=2,
            chunk_id=2,
            document_id=1,
            source="a.txt",
            start=100,
            text="A branch in Git is a movable pointer to a commit in the repository.",
        ),
    ]
    checked = check_answer("In Git a branch is a movable pointer to a commit.", passages)
    assert [c.chunk_id for c in checked.citations] == [2]
