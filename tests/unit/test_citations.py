from __future__ import annotations

from app.rag.citations import (
    Passage,
    check_answer,
    cited_numbers,
    exact_tokens,
    quote_matches,
    split_sentences,
    strip_markers,
)
from app.rag.evidence import DocumentSpan

DOCUMENT = (
    "第一章 权限。\n给一个目录设置粘滞位将保护该目录内的文件不被其所有者之外的一个用户删除。"
    "/tmp 目录通常设置了粘滞位。\n"
    "第二章 网络。网络接口的配置文件位于 /etc/network/interfaces。"
)
STICKY_START = DOCUMENT.index("给一个目录")


def span_passage(
    *, number: int, chunk_id: int, document_id: int, source: str, text: str, start: int
) -> Passage:
    span = DocumentSpan(
        chunk_id=chunk_id,
        document_id=document_id,
        source=source,
        text=text,
        score=0.0,
        start=start,
        end=start + len(text),
    )
    return Passage(number=number, evidence=span)
NETWORK_START = DOCUMENT.index("网络接口")


def one_passage(text: str) -> list[Passage]:
    return [span_passage(number=1, chunk_id=1, document_id=1, source="a.txt", text=text, start=0)]


def passages() -> list[Passage]:
    sticky = DOCUMENT[STICKY_START : DOCUMENT.index("\n第二章")]
    network = DOCUMENT[NETWORK_START:]
    return [
        span_passage(number=1, chunk_id=11, document_id=1, source="a.txt", text=sticky, start=STICKY_START),
        span_passage(number=2, chunk_id=12, document_id=1, source="a.txt", text=network, start=NETWORK_START),
    ]


def test_supported_citation_quotes_an_exact_span_of_the_document() -> None:
    checked = check_answer("粘滞位保护目录内的文件不被其所有者之外的用户删除 [1]。", passages())
    assert len(checked.citations) == 1
    citation = checked.citations[0]
    assert citation.chunk_id == 11 and citation.passage == 1
    assert "粘滞位" in citation.quote
    assert quote_matches(DOCUMENT, citation.start, citation.end, citation.quote)
    assert checked.sentences[0].supported and checked.text.endswith("[1]。")


def test_a_wrong_marker_is_dropped_and_the_citation_points_where_the_support_is() -> None:
    checked = check_answer("粘滞位保护目录内的文件不被其所有者之外的用户删除 [2]。", passages())
    assert checked.dropped_markers == 1
    assert [c.passage for c in checked.citations] == [1]
    assert checked.sentences[0].supported and checked.text.endswith("[1]。")


def test_a_sentence_no_passage_supports_is_marked_unsupported_without_markers() -> None:
    checked = check_answer("粘滞位会在每天凌晨自动清空整个目录并发邮件通知管理员 [2]。", passages())
    assert checked.citations == ()
    assert checked.sentences[0].supported is False
    assert checked.dropped_markers == 1
    assert "[" not in checked.text


def test_forged_content_is_not_supported_by_any_passage() -> None:
    checked = check_answer("设置 SELinux 策略后系统会自动加密并备份全部文件 [1]。", passages())
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
    passage = one_passage(
        "自从每个用户都有自己的私人组之后，把umask设置成0002变得更安全了。配置文件是 /etc/login.defs。"
    )
    right = check_answer("把 umask 设置成 0002 变得更安全了 [1]。", passage)
    wrong = check_answer("把 umask 设置成 0022 变得更安全了 [1]。", passage)
    assert right.citations and right.sentences[0].supported
    assert wrong.citations == () and wrong.sentences[0].supported is False
    assert check_answer("配置文件是 /etc/login.defs [1]。", passage).citations
    assert check_answer("配置文件是 /etc/default/useradd [1]。", passage).citations == ()


def test_exact_tokens() -> None:
    assert exact_tokens(
        "Run git branch -d topic, umask 0002, see /etc/fstab and v2.39.5 or --reference."
    ) == {
        "-d",
        "0002",
        "/etc/fstab",
        "v2.39.5",
        "--reference",
    }
    # A number keeps its place even with a unit after it; names with digits or in capitals are exact too.
    assert exact_tokens("日志最多占用 200MB，ext4 上的 C.UTF-8，用 MD5 和 SIGKILL") == {
        "200",
        "ext4",
        "C.UTF-8",
        "MD5",
        "SIGKILL",
    }


def test_options_are_compared_with_their_case() -> None:
    passage = one_passage("To delete a branch that was never merged, use git branch -D topic.")
    assert check_answer(
        "Delete it with git branch -D topic [1].", passage, "How do I delete an unmerged branch?"
    ).citations
    wrong = check_answer(
        "Delete it with git branch -d topic [1].", passage, "How do I delete an unmerged branch?"
    )
    assert wrong.citations == ()


def test_a_claim_is_what_the_sentence_adds_to_the_question() -> None:
    passage = one_passage("ldap | 389 | ldaps | 636\n\n加密消耗 CPU 时间。")
    question = "LDAP 改用加密的 ldaps 之后，对应的是哪个端口？"
    # The question's own words need no support; the port does.
    checked = check_answer("LDAP 改用加密的 ldaps 之后，对应的是端口 636。", passage, question)
    assert checked.sentences[0].supported and checked.citations[0].quote.startswith("ldap | 389")
    assert check_answer("LDAP 改用加密的 ldaps 之后，对应的是端口 587。", passage, question).citations == ()
    # Repeating the question answers nothing.
    echo = check_answer("LDAP 改用加密的 ldaps 之后对应哪个端口。", passage, question)
    assert echo.citations == () and echo.supported_share == 0.0


def test_a_number_found_in_an_unrelated_sentence_is_no_support() -> None:
    passage = one_passage(
        "$ git bisect good v2.6.18\nBisecting: 1769 revisions left after this.\nThen mark it bad."
    )
    question = "Which exit code makes an automated script skip the current commit?"
    checked = check_answer("The exit code 1769 makes it skip the commit [1].", passage, question)
    assert checked.citations == ()


def test_a_claim_too_small_to_check_is_never_supported() -> None:
    passage = one_passage("The logrotate program rotates log files and keeps old copies for a while.")
    question = "How many old copies of each log file does logrotate keep?"
    # Beyond the question this says only "program": a placeholder, not an answer.
    placeholder = check_answer(
        "The logrotate program keeps X old copies of each log file [1].", passage, question
    )
    assert placeholder.citations == ()
    # English inflections do not make new claims: "renames" was asked, "rename" adds nothing.
    remote = one_passage("git remote add origin URL")
    echo = check_answer("Run git remote rename origin [1].", remote, "What renames a remote like origin?")
    assert echo.citations == ()


def test_quoted_code_must_be_in_the_quote_as_written() -> None:
    passage = one_passage(
        "To pack loose objects, run\n\n    $ git repack\n\nThis creates a single pack file."
    )
    question = "How do I pack loose objects?"
    assert check_answer("$ git repack", passage, question).citations
    assert check_answer("Run `git repack` [1].", passage, question).citations
    assert check_answer("Run `git gc --prune` [1].", passage, question).citations == ()


def test_the_answer_is_its_first_claim() -> None:
    passage = one_passage(
        "$ git bisect bad\nBisecting: 1769 revisions left to test after this.\n"
        "Compile and test it, and see whether it crashes."
    )
    question = "Which exit code makes git bisect skip a commit when a test script runs it?"
    padded = check_answer(
        "Exit code 125 makes bisect skip it. Compile and test it, and see whether it crashes [1].",
        passage,
        question,
    )
    assert padded.supported_share == 0.5 and not padded.answer_supported
    # A first sentence that only restates the question claims nothing; the answer is the next one.
    restated = check_answer(
        "Git bisect can skip a commit. Compile and test it, and see whether it crashes [1].",
        passage,
        question,
    )
    assert not restated.sentences[0].claims and restated.answer_supported


def test_a_command_made_of_the_questions_words_is_a_claim() -> None:
    passage = one_passage("A branch is a movable pointer to a commit. Use git branch to list branches.")
    question = "How do I list branches in Git?"
    command = check_answer("Use git branch [1].", passage, question)
    assert command.answer_supported and command.citations[0].quote == "Use git branch to list branches."
    # The same words in an order the passage does not have: a restatement, or a command it never names.
    for answer in ("Git can list branches [1].", "Run git list branches [1]."):
        checked = check_answer(answer, passage, question)
        assert checked.citations == () and not checked.answer_supported


def test_an_answer_that_is_only_the_asked_value_is_checked() -> None:
    passage = one_passage("新建文件时，默认的 umask 是 0022。\n用户组私有时常用 0002。")
    question = "默认的 umask 是多少？"
    assert (
        check_answer("0022 [1]。", passage, question).citations[0].quote
        == "新建文件时，默认的 umask 是 0022。"
    )
    assert check_answer("0027 [1]。", passage, question).citations == ()


def test_removing_markers_keeps_the_space_before_a_dotted_name() -> None:
    assert strip_markers("They live in .git/rebase-apply [2].") == "They live in .git/rebase-apply."
    assert strip_markers("它在 /etc/hosts 里 [1]。") == "它在 /etc/hosts 里。"


def test_a_tiny_sentence_is_never_supported_by_chance() -> None:
    passage = one_passage("There is no limit on uploads.")
    checked = check_answer("No [1].", passage)
    assert checked.citations == () and checked.supported_share == 0.0


def test_an_unmarked_sentence_gets_its_best_passage_not_the_first_good_enough() -> None:
    passages = [
        span_passage(
            number=1,
            chunk_id=1,
            document_id=1,
            source="a.txt",
            start=0,
            text="Git stores snapshots of the project in a repository.",
        ),
        span_passage(
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
