"""The web page in a real browser (headless Chromium through Playwright) against a real `wenda serve` with
the bundled model: upload by picker and by drop, follow the jobs, ask in Chinese with the answer streaming in,
preview and open a citation, rate, correct (never withdrawing an approved correction), have the approved
correction answer the question again with its own citation, delete; English labels, keyboard use and a
phone-width screen.

Screenshots go to $WENDA_TEST_ARTIFACTS, or test-artifacts/web/ at the repository root.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.rag.llm_local import BUNDLED_MODEL_NAME

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [pytest.mark.integration, pytest.mark.llm]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

# Short, with one distinctive fact each, so the 0.5B model on the CPU answers in seconds and from the text.
POLICY_NAME = "年假制度.txt"
POLICY = (
    "年假制度\n\n"
    "公司员工每年享有15天带薪年假。年假须在当年12月31日前休完，未休完的年假不能顺延到下一年。\n\n"
    "病假需要提供医院证明。\n"
)
TRAVEL_NAME = "travel.txt"
TRAVEL = "差旅报销\n\n出差的交通费用凭发票在30天内报销。\n"
QUESTION = "员工每年有多少天带薪年假？"
ELF_HEADER = b"\x7fELF\x02\x01\x01" + bytes(57)  # an executable program: refused at upload
DRAFT = "员工每年有15天带薪年假。"
CORRECTION = "员工每年有15天带薪年假，须在当年12月31日前休完。"
SUM_QUESTION = "3.5万加上12800是多少？"
LATER_CORRECTION = "员工每年有15天带薪年假，须在当年12月31日前休完，不能顺延到下一年。"


def artifacts_dir() -> Path:
    configured = os.environ.get("WENDA_TEST_ARTIFACTS")
    folder = Path(configured) if configured else ROOT / "test-artifacts" / "web"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def require_browser() -> None:
    """Skip without Chromium or Playwright, unless the run demands a browser (WENDA_REQUIRE_BROWSER=1)."""
    missing = []
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    if not missing:
        return
    reason = "no real browser: missing " + " and ".join(missing)
    if os.environ.get("WENDA_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module", autouse=True)
def _real_browser() -> None:
    """Checked before anything is started or prepared."""
    require_browser()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory, bundled_model_dir: Path) -> Iterator[str]:
    """A real `wenda serve` on a loopback port, with the bundled model, ready."""
    port = free_port()
    env = {
        **os.environ,
        "WENDA_DATA_DIR": str(tmp_path_factory.mktemp("web") / "data"),
        "WENDA_LLM__LOCAL_MODEL_DIR": str(bundled_model_dir),
        "WENDA_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "wenda serve not ready within 180 s"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        yield url
    finally:
        server.terminate()
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


def fontconfig_with_chinese(folder: Path) -> Path:
    """A fontconfig file that adds the Noto Sans SC of pylopdf-fonts-zh-cn (a test dependency already, for the
    OCR tests) to the system's fonts: a bare container has no Chinese font, and its screenshots would show
    boxes where the Chinese text is."""
    import pylopdf_fonts_zh_cn

    config = folder / "fonts.conf"
    config.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        f"  <dir>{Path(pylopdf_fonts_zh_cn.sans_path()).parent}</dir>\n"
        f"  <cachedir>{folder / 'font-cache'}</cachedir>\n"
        "</fontconfig>\n",
        encoding="utf-8",
    )
    return config


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    fonts = fontconfig_with_chinese(tmp_path_factory.mktemp("fonts"))
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), env={**os.environ, "FONTCONFIG_FILE": str(fonts)}
        )
        yield launched
        launched.close()


def is_loopback(url: str) -> bool:
    return url.startswith(("data:", "blob:")) or urlsplit(url).hostname in LOOPBACK


@contextmanager
def guarded_context(browser: Browser, **options: Any) -> Iterator[tuple[BrowserContext, list[str]]]:
    """A browser context that refuses every request leaving the machine and lists them (there must be none)."""
    context = browser.new_context(**options)
    off_machine: list[str] = []

    def refuse(route: Any) -> None:
        off_machine.append(route.request.url)
        route.abort()

    context.route(lambda url: not is_loopback(url), refuse)
    context.on(
        "request", lambda request: None if is_loopback(request.url) else off_machine.append(request.url)
    )
    try:
        yield context, off_machine
    finally:
        context.close()


@contextmanager
def screenshot_on_failure(page: Page, name: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        page.screenshot(path=str(artifacts_dir() / f"failed-{name}.png"), full_page=True)
        raise


def open_page(context: BrowserContext, url: str) -> tuple[Page, list[str]]:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # The browser logs every error status as "Failed to load resource"; the page shows those itself.
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page, errors


# Functions, not expressions, are what the page is given to run: a string expression would be evaluated by
# eval() in the page, which its Content-Security-Policy forbids.

# Records, in the page, every state the answer and the uploads pass through: a stream can be faster than
# any polling from the test.
RECORDER = """() => {
  window.answerLog = [];
  window.uploadPhases = {};
  const answer = document.getElementById("answer");
  const text = document.getElementById("answer-text");
  new MutationObserver(() => window.answerLog.push([answer.dataset.state, text.textContent])).observe(
    answer, { subtree: true, childList: true, characterData: true, attributes: true });
  const uploads = document.getElementById("uploads");
  new MutationObserver(() => {
    for (const item of uploads.querySelectorAll("li")) {
      const name = item.querySelector(".upload-name").textContent;
      const phases = (window.uploadPhases[name] ||= []);
      if (phases[phases.length - 1] !== item.dataset.phase) phases.push(item.dataset.phase);
    }
  }).observe(uploads, { subtree: true, childList: true, attributes: true, characterData: true });
}"""

DROP = """([name, text]) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([text], name, { type: "text/plain" }));
  const zone = document.getElementById("dropzone");
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
  }
}"""


def wait_for_saved_feedback(page: Page, after: int) -> int:
    """The id of the row the page saved after row `after`, once the page has withdrawn what it replaces."""
    page.wait_for_function(
        """(after) => Number(document.getElementById("feedback").dataset.feedbackId || 0) > after
          && !document.getElementById("correction-send").disabled""",
        arg=after,
    )
    return int(page.get_attribute("#feedback", "data-feedback-id") or 0)


def ask_in_page(page: Page, question: str, previous_query_id: str) -> str:
    """Ask with the keyboard and wait for the checked answer; its query id."""
    page.fill("#question", question)
    page.press("#question", "Enter")
    page.wait_for_function(
        """(previous) => {
          const answer = document.getElementById("answer");
          return answer.dataset.queryId && answer.dataset.queryId !== previous
            && ["grounded", "refused"].includes(answer.dataset.state);
        }""",
        arg=previous_query_id,
        timeout=120_000,
    )
    return page.get_attribute("#answer", "data-query-id") or ""


def test_upload_ask_cite_rate_correct_and_delete_in_chinese(
    server_url: str, browser: Browser, tmp_path: Path
) -> None:
    began = time.monotonic()
    policy_file = tmp_path / POLICY_NAME
    policy_file.write_text(POLICY, encoding="utf-8")
    api = httpx.Client(base_url=server_url, timeout=30)
    with guarded_context(browser, locale="zh-CN", viewport={"width": 1280, "height": 900}) as (
        context,
        off_machine,
    ):
        page, errors = open_page(context, server_url)
        with screenshot_on_failure(page, "chinese-flow"):
            # The browser's language chose Chinese.
            assert page.evaluate("document.documentElement.lang") == "zh-CN"
            assert page.inner_text("#ask-button") == "提问"
            page.evaluate(RECORDER)

            # A collection of its own, then one file by the picker and one dropped on the zone.
            page.fill("#new-collection-name", "规章")
            page.click("#new-collection button[type=submit]")
            assert page.input_value("#collection") == "规章"
            page.set_input_files("#files", str(policy_file))
            page.evaluate(DROP, [TRAVEL_NAME, TRAVEL])
            page.wait_for_function(
                "() => document.querySelectorAll('#uploads li[data-phase=done]').length === 2"
            )
            phases = page.evaluate("window.uploadPhases")
            for name in (POLICY_NAME, TRAVEL_NAME):
                assert phases[name][0] == "sending" and phases[name][-1] == "done", phases
                assert len(phases[name]) >= 3, phases  # sending, then the job (queued or running), then done
            assert page.locator("#uploads li[data-phase=done] progress").evaluate_all(
                "bars => bars.map(bar => bar.value)"
            ) == [1, 1]
            page.wait_for_function(
                "() => document.querySelectorAll('#documents li .status-ready').length === 2"
            )
            assert sorted(page.locator("#documents .document-name").all_inner_texts()) == sorted(
                [POLICY_NAME, TRAVEL_NAME]
            )

            # Ask with the keyboard: the answer streams in, then the checked answer replaces it.
            page.fill("#question", QUESTION)
            page.press("#question", "Enter")
            page.wait_for_selector(
                "#answer[data-state=grounded], #answer[data-state=refused]", timeout=120_000
            )
            log: list[list[str]] = page.evaluate("window.answerLog")
            streamed = [text for state, text in log if state == "streaming" and text]
            assert streamed, log
            first_checked = next(i for i, (state, _) in enumerate(log) if state in ("grounded", "refused"))
            assert (
                max(i for i, (state, text) in enumerate(log) if state == "streaming" and text) < first_checked
            )
            assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(streamed)), streamed
            assert page.get_attribute("#answer", "data-state") == "grounded", page.inner_text("#answer")
            answer_text = page.inner_text("#answer-text")
            assert "15" in answer_text
            query_id = page.get_attribute("#answer", "data-query-id")
            record = api.get(f"/v1/queries/{query_id}").json()
            assert record["question"] == QUESTION and record["grounded"]
            assert BUNDLED_MODEL_NAME in page.inner_text("#answer-route")

            # Pointing at a mark previews its citation without taking the focus; it goes with the pointer.
            mark = page.locator("#answer-text button.cite").first
            popover = page.locator("#citation-popover")
            mark.hover()
            assert popover.is_visible()
            assert popover.locator("[data-part=quote]").inner_text() in POLICY
            assert popover.locator("[data-part=source]").inner_text() == POLICY_NAME
            assert page.evaluate("document.activeElement.id") != "citation-popover"
            page.mouse.move(0, 0)
            popover.wait_for(state="hidden")

            # Tabbing to it previews it too; Enter opens it (the focus moves in), Escape closes it and gives
            # the focus back to the mark, Space opens it again.
            mark.focus()
            assert popover.is_visible() and "15" in popover.locator("[data-part=quote]").inner_text()
            assert page.evaluate("document.activeElement.classList.contains('cite')")
            page.keyboard.press("Enter")
            assert popover.is_visible()
            assert page.evaluate("document.activeElement.id") == "citation-popover"
            page.keyboard.press("Escape")
            assert popover.is_hidden()
            assert page.evaluate("document.activeElement.classList.contains('cite')")
            page.keyboard.press(" ")
            assert popover.is_visible()
            page.keyboard.press("Escape")
            assert popover.is_hidden()

            # A click opens it to stay: the pointer leaving does not close it.
            mark.click()
            page.mouse.move(0, 0)
            page.wait_for_timeout(400)
            assert popover.is_visible()
            quote = popover.locator("[data-part=quote]").inner_text()
            assert quote and quote in POLICY
            assert "15" in quote
            assert popover.locator("[data-part=source]").inner_text() == POLICY_NAME
            assert popover.locator("[data-part=kind]").inner_text() == "文档原文"
            position = popover.locator("[data-part=position]").inner_text()
            start, end = (int(n) for n in re.findall(r"\d+", position))
            assert POLICY[start:end] == quote, (position, quote)
            document_mark_color = mark.evaluate("button => getComputedStyle(button).borderTopColor")
            page.screenshot(path=str(artifacts_dir() / "answer-zh-citation.png"), full_page=True)
            page.keyboard.press("Escape")

            # Thumbs up: stored as a rating of this answer.
            page.click("#rate-up")
            rating_id = wait_for_saved_feedback(page, 0)
            assert "评价已保存" in page.inner_text("#feedback-state")
            assert page.get_attribute("#rate-up", "aria-pressed") == "true"
            rating = api.get(f"/v1/feedback/{rating_id}").json()
            assert (rating["query_id"], rating["rating"], rating["status"]) == (query_id, "up", "rating")

            def feedback_row(feedback_id: int) -> tuple[str | None, str, str]:
                row = api.get(f"/v1/feedback/{feedback_id}").json()
                assert row["query_id"] == query_id
                return row["correction"], row["rating"], row["status"]

            # A correction carries that rating and replaces the rating-only row: awaiting approval.
            page.fill("#correction", DRAFT)
            page.click("#correction-send")
            draft_id = wait_for_saved_feedback(page, rating_id)
            assert "等待审核" in page.inner_text("#feedback-state")
            assert feedback_row(draft_id) == (DRAFT, "up", "pending")
            assert feedback_row(rating_id)[2] == "withdrawn"

            # Edited and sent again while still pending: the new text replaces it.
            page.fill("#correction", CORRECTION)
            page.click("#correction-send")
            correction_id = wait_for_saved_feedback(page, draft_id)
            assert feedback_row(correction_id) == (CORRECTION, "up", "pending")
            assert feedback_row(draft_id)[2] == "withdrawn"

            # A reviewer approves it while the page still shows it waiting.
            approved = api.post(f"/v1/feedback/{correction_id}/approve")
            assert approved.status_code == 200 and approved.json()["status"] == "approved"

            # The thumb changed now is a rating of its own: the approved correction stays in use.
            page.click("#rate-down")
            down_id = wait_for_saved_feedback(page, correction_id)
            assert page.get_attribute("#rate-down", "aria-pressed") == "true"
            assert feedback_row(down_id) == (None, "down", "rating")
            assert feedback_row(correction_id)[2] == "approved"

            # So does a correction edited now: the page finds it approved, keeps it and says so.
            page.fill("#correction", LATER_CORRECTION)
            page.click("#correction-send")
            later_id = wait_for_saved_feedback(page, down_id)
            assert feedback_row(later_id) == (LATER_CORRECTION, "down", "pending")
            assert feedback_row(correction_id)[2] == "approved"
            assert feedback_row(down_id)[2] == "withdrawn"  # its vote is the new correction's
            assert f"#{correction_id}" in page.inner_text("#feedback-state")

            # The same question again: the approved correction is the answer, no model is asked, and its
            # mark is a correction's, previewed with the span of the correction it quotes.
            corrected_query_id = ask_in_page(page, QUESTION, query_id)
            assert page.get_attribute("#answer", "data-state") == "grounded", page.inner_text("#answer")
            assert f"#{correction_id}" in page.inner_text("#answer-state")
            assert page.inner_text("#answer-route") == "未调用模型。"
            assert "15" in page.inner_text("#answer-text")
            assert api.get(f"/v1/queries/{corrected_query_id}").json()["question"] == QUESTION
            marks = page.locator("#answer-text button.cite")
            correction_marks = page.locator("#answer-text button.cite-correction")
            assert correction_marks.count() == marks.count() >= 1
            correction_mark = correction_marks.first
            assert correction_mark.inner_text().startswith("✎")
            assert (
                correction_mark.evaluate("button => getComputedStyle(button).borderTopColor")
                != document_mark_color
            )
            correction_mark.hover()
            assert popover.is_visible() and popover.get_attribute("data-kind") == "correction"
            assert popover.locator("[data-part=kind]").inner_text() == "已审核的更正"
            assert popover.locator("[data-part=source]").inner_text() == f"更正 #{correction_id}"
            correction_quote = popover.locator("[data-part=quote]").inner_text()
            assert correction_quote and correction_quote in CORRECTION and "15" in correction_quote
            position = popover.locator("[data-part=position]").inner_text()
            start, end = (int(n) for n in re.findall(r"\d+", position))
            assert CORRECTION[start:end] == correction_quote, (position, correction_quote)
            page.screenshot(path=str(artifacts_dir() / "answer-zh-correction.png"), full_page=True)
            page.mouse.move(0, 0)
            popover.wait_for(state="hidden")

            # A sum no document holds: the calculator's fact, cited with a fact's mark and no position.
            ask_in_page(page, SUM_QUESTION, corrected_query_id)
            assert page.get_attribute("#answer", "data-state") == "grounded", page.inner_text("#answer")
            assert "47800" in page.inner_text("#answer-text").replace(",", "")
            fact_mark = page.locator("#answer-text button.cite-fact").first
            assert fact_mark.inner_text().startswith("◆")
            fact_mark.hover()
            assert popover.get_attribute("data-kind") == "fact"
            assert popover.locator("[data-part=kind]").inner_text() == "事实"
            assert popover.locator("[data-part=quote]").inner_text() == "47800"
            assert (
                popover.locator("[data-part=source]").inner_text()
                == "35000 + 12800 的计算结果（来自 calculator）"
            )
            assert popover.locator("[data-part=position]").is_hidden()
            page.screenshot(path=str(artifacts_dir() / "answer-zh-fact.png"), full_page=True)
            page.mouse.move(0, 0)

            # Delete the dropped document from the list.
            page.once("dialog", lambda dialog: dialog.accept())
            page.locator("#documents li", has_text=TRAVEL_NAME).get_by_role("button").click()
            page.wait_for_function(
                f"() => ![...document.querySelectorAll('#documents .document-name')]"
                f".some(name => name.textContent === {TRAVEL_NAME!r})"
            )
            listed = api.get("/v1/collections/规章/documents").json()["documents"]
            assert [d["filename"] for d in listed] == [POLICY_NAME]

            # On a phone: one column, nothing wider than the screen, the citation as a sheet at the bottom.
            page.set_viewport_size({"width": 375, "height": 812})
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert widths[0] <= widths[1], widths
            fact_mark.click()
            sheet = popover.bounding_box()
            assert sheet and sheet["x"] >= 0 and sheet["x"] + sheet["width"] <= 375
            page.screenshot(path=str(artifacts_dir() / "phone-375-zh.png"))

        assert not errors, errors
    assert not off_machine, off_machine
    print(f"chinese flow in the browser: {time.monotonic() - began:.1f} s")


def test_english_labels_keyboard_and_phone_width(server_url: str, browser: Browser) -> None:
    with guarded_context(browser, locale="en-US", viewport={"width": 1280, "height": 900}) as (
        context,
        off_machine,
    ):
        page, errors = open_page(context, server_url)
        with screenshot_on_failure(page, "english"):
            assert page.evaluate("document.documentElement.lang") == "en"
            assert page.inner_text("#ask-button") == "Ask"
            assert (
                page.inner_text("#dropzone span[data-i18n='upload.drop']")
                == "Drop files here, or choose them"
            )

            # Switched to Chinese, remembered across a reload, and back.
            page.click("#language")
            assert page.evaluate("document.documentElement.lang") == "zh-CN"
            assert page.inner_text("#ask-button") == "提问"
            page.reload()
            page.wait_for_selector("body[data-ready=true]")
            assert page.inner_text("#ask-button") == "提问"
            page.click("#language")
            assert page.inner_text("#ask-button") == "Ask"
            assert page.inner_text("#documents-title") == "Documents"

            # The drop zone is a labelled file picker the keyboard reaches, with a visible focus ring.
            page.focus("#new-collection button[type=submit]")
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "files"
            assert page.get_by_label("Drop files here, or choose them").count() == 1
            assert page.eval_on_selector("#dropzone", "zone => getComputedStyle(zone).outlineStyle") != "none"

            # A bad collection name is refused before any request; the server's own errors are shown as sent.
            page.fill("#new-collection-name", "-bad name")
            page.press("#new-collection-name", "Enter")
            assert "collection name" in page.inner_text("#collection-error")
            page.fill("#new-collection-name", "empty-one")
            page.press("#new-collection-name", "Enter")
            page.fill("#question", "What is in here?")
            page.press("#question", "Enter")
            page.wait_for_selector("#ask-error:not([hidden])")
            assert "not found" in page.inner_text("#ask-error")

            # Each file's error, whether the upload is refused or its job fails.
            page.set_input_files(
                "#files",
                [
                    {"name": "empty.txt", "mimeType": "text/plain", "buffer": b""},
                    {"name": "program.dat", "mimeType": "application/octet-stream", "buffer": ELF_HEADER},
                ],
            )
            page.wait_for_function(
                "() => document.querySelectorAll('#uploads li[data-phase=failed]').length === 2"
            )
            refused = (
                page.locator("#uploads li", has_text="program.dat").locator(".upload-status").inner_text()
            )
            assert refused.startswith("Failed: ") and "unsupported file type" in refused
            failed = page.locator("#uploads li", has_text="empty.txt").locator(".upload-status").inner_text()
            assert failed == "Failed: the text file contains no text"
            page.wait_for_selector("#documents li .status-failed")
            assert "contains no text" in page.locator("#documents li", has_text="empty.txt").inner_text()

            # A phone: one column and nothing wider than the screen.
            page.set_viewport_size({"width": 375, "height": 812})
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert widths[0] <= widths[1], widths
            library = page.locator("section.library").bounding_box()
            asking = page.locator("section.asking").bounding_box()
            assert library and asking and asking["y"] >= library["y"] + library["height"]
            assert library["width"] <= 375 and asking["width"] <= 375
            page.screenshot(path=str(artifacts_dir() / "phone-375-en.png"), full_page=True)
        assert not errors, errors
    assert not off_machine, off_machine
