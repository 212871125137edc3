"""Stop strings for the local backend: the answer ends before the template's next label."""

from __future__ import annotations

from app.rag.llm_local import StopStringFilter, cut_at_stop

STOPS = ("问题：", "Question:")


def test_text_is_cut_before_the_first_stop_string() -> None:
    assert cut_at_stop("Use git branch [1].\n\nQuestion: next", STOPS) == ("Use git branch [1].\n\n", True)
    assert cut_at_stop("答案 [1]。问题：下一个？Question:", STOPS) == ("答案 [1]。", True)
    assert cut_at_stop("no label here", STOPS) == ("no label here", False)
    assert cut_at_stop("anything", ()) == ("anything", False)


def test_a_stop_string_split_across_pieces_never_reaches_the_client() -> None:
    stream = StopStringFilter(STOPS)
    sent = [stream.feed(piece) for piece in ("答案是 0022 [1]。\n问", "题", "：下一个问题", "还有")]
    assert "".join(sent) == "答案是 0022 [1]。\n" and sent[1:] == ["", "", ""]
    assert stream.stopped and stream.flush() == ""


def test_held_back_text_that_is_not_a_stop_string_is_sent_later() -> None:
    stream = StopStringFilter(STOPS)
    assert stream.feed("他提了一个问") == "他提了一个"  # "问" may begin "问题："
    assert stream.feed("题，") == "问题，"
    assert stream.feed("See Quest") == "See "
    assert stream.flush() == "Quest" and not stream.stopped
