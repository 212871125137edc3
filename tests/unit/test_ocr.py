"""OCR: the real RapidOCR engine on pages rendered here, the line joining on synthetic boxes, and images
through the parse child process.

The fonts are Noto Sans SC and Noto Serif SC from the ``pylopdf-fonts-zh-cn`` package (SIL Open Font License);
their Latin glyphs set the English text too. The engine tests take ~1-4 s each on two cores.
"""

from __future__ import annotations

import io
import math
import re
import sys

import numpy as np
import pylopdf_fonts_zh_cn
import pytest
from PIL import Image, ImageDraw, ImageFont

from app.rag.errors import DocumentParseError
from app.rag.types import FileType
from ingest.formats.images import parse_image
from ingest.ocr import TextBox, join_lines, recognize, text_from_boxes
from ingest.parse_limits import parse_in_subprocess

DPI = 150
BODY_PIXELS = round(11 / 72 * DPI)  # 11 pt

ENGLISH = (
    "The library closes at six on weekdays and at noon on Saturdays. Books borrowed on a Friday are due "
    "back three weeks later, on the Monday.",
    "Readers who need a quiet room for a group can book one at the front desk; rooms hold up to eight "
    "people and may be kept for two hours.",
)
CHINESE = (
    "图书馆工作日晚上六点闭馆，星期六中午十二点闭馆。星期五借出的图书，应在三周后的星期一归还。",
    "需要安静房间进行小组讨论的读者，可以在前台预约。每个房间最多容纳八人，每次最长使用两小时。",
)


def _font(size: int, *, serif: bool = False) -> ImageFont.FreeTypeFont:
    path = pylopdf_fonts_zh_cn.serif_path() if serif else pylopdf_fonts_zh_cn.sans_path()
    return ImageFont.truetype(str(path), size)


def _page(lines: list[tuple[int, str]], *, width: int = 1240, serif: bool = False) -> Image.Image:
    """White page at 150 dpi with each (indent in pixels or -1 for a paragraph gap, text) line set in 11 pt."""
    font = _font(BODY_PIXELS, serif=serif)
    pitch = round(BODY_PIXELS * 1.5)
    height = 2 * 100 + pitch * len(lines)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    y = 100
    for indent, text in lines:
        if indent >= 0:
            draw.text((100 + indent, y), text, font=font, fill="black")
        y += pitch
    return image


def _wrapped(
    paragraphs: tuple[str, ...], *, width: int, chinese: bool, serif: bool = False
) -> list[tuple[int, str]]:
    """Paragraphs broken into lines no wider than ``width``: English apart by a gap, Chinese indented."""
    font = _font(BODY_PIXELS, serif=serif)
    lines: list[tuple[int, str]] = []
    for paragraph in paragraphs:
        if lines and not chinese:
            lines.append((-1, ""))
        indent = 2 * BODY_PIXELS if chinese else 0
        current = ""
        for unit in paragraph if chinese else paragraph.split(" "):
            candidate = current + unit if chinese else f"{current} {unit}".strip()
            if current and font.getlength(candidate) > width - indent:
                lines.append((indent, current))
                indent, current = 0, unit
            else:
                current = candidate
        lines.append((indent, current))
    return lines


def _edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _error_rate(read: str, expected: str) -> float:
    return _edit_distance(read, expected) / len(expected)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _box(
    left: float, top: float, width: float, text: str, *, height: float = 30, score: float = 0.95
) -> TextBox:
    corners = ((left, top), (left + width, top), (left + width, top + height), (left, top + height))
    return TextBox(corners, text, score)


def _turned(box: TextBox, degrees: float) -> TextBox:
    """``box`` as it lies on the page turned by ``degrees`` about its top left corner."""
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return TextBox(tuple((x * cos - y * sin, x * sin + y * cos) for x, y in box.corners), box.text, box.score)


# --- joining lines: synthetic boxes, no engine ----------------------------------------------------


def test_boxes_are_read_in_lines_top_to_bottom_and_left_to_right() -> None:
    boxes = [
        _box(100, 136, 400, "second line"),
        _box(560, 100, 300, "right half"),
        _box(100, 100, 400, "left half"),
    ]

    # The first line runs to the right edge, so the second continues its paragraph.
    assert text_from_boxes(boxes) == "left half right half second line"


def test_chinese_lines_join_without_a_space_and_english_with_one() -> None:
    assert (
        join_lines("技术人员需要逐一核对", "登记册中的每台水泵") == "技术人员需要逐一核对登记册中的每台水泵"
    )
    assert join_lines("every pump,", "valve and gauge") == "every pump, valve and gauge"
    assert join_lines("使用", "Python 编写") == "使用Python 编写"


def test_a_word_hyphenated_at_a_line_end_is_put_back_together() -> None:
    assert join_lines("a short exam-", "ple of it") == "a short example of it"
    # Not a hyphenation: a dash before a number, or a capital after it.
    assert join_lines("pages 10-", "12 of it") == "pages 10- 12 of it"
    assert join_lines("the Sino-", "Tibetan languages") == "the Sino- Tibetan languages"


def test_a_paragraph_is_its_lines_joined_and_a_larger_gap_starts_the_next() -> None:
    boxes = [
        _box(100, 100, 900, "Readers who need a quiet room can book one at the front"),
        _box(100, 136, 900, "desk; rooms hold up to eight people and may be kept for"),
        _box(100, 172, 400, "two hours."),
        _box(100, 230, 900, "The library closes at six on weekdays and at noon on"),
        _box(100, 266, 300, "Saturdays."),
    ]

    assert text_from_boxes(boxes) == (
        "Readers who need a quiet room can book one at the front desk; rooms hold up to eight people and may be "
        "kept for two hours.\n\nThe library closes at six on weekdays and at noon on Saturdays."
    )


def test_an_indented_first_line_starts_a_chinese_paragraph() -> None:
    boxes = [
        _box(160, 100, 840, "图书馆工作日晚上六点闭馆，星期六中午十二点闭馆。"),
        _box(100, 136, 900, "星期五借出的图书，应在三周后的星期一归还。逾期"),
        _box(100, 172, 500, "归还的，按天计费。"),
        _box(160, 208, 840, "需要安静房间进行小组讨论的读者，可以在前台预约。"),
        _box(100, 244, 600, "每个房间最多容纳八人。"),
    ]

    assert text_from_boxes(boxes) == (
        "图书馆工作日晚上六点闭馆，星期六中午十二点闭馆。星期五借出的图书，应在三周后的星期一归还。逾期归还的，按天计费。"
        "\n\n需要安静房间进行小组讨论的读者，可以在前台预约。每个房间最多容纳八人。"
    )


def test_a_heading_in_larger_type_is_a_paragraph_of_its_own() -> None:
    boxes = [
        _box(100, 100, 500, "Opening Hours", height=48),
        _box(100, 156, 900, "The library closes at six on weekdays and at noon on"),
        _box(100, 192, 300, "Saturdays."),
    ]

    assert text_from_boxes(boxes) == (
        "Opening Hours\n\nThe library closes at six on weekdays and at noon on Saturdays."
    )


def test_list_items_and_lines_that_end_short_keep_their_breaks() -> None:
    boxes = [
        _box(100, 100, 900, "Bring the following to the front desk when you register:"),
        _box(100, 136, 300, "1. an identity card"),
        _box(100, 172, 900, "2. proof of address, such as a utility bill or a bank"),
        _box(100, 208, 300, "statement"),
        _box(100, 244, 900, "（三）一张近期的证件照片，背景为白色，尺寸不小于两寸，"),
        _box(100, 280, 300, "不戴帽子。"),
        _box(100, 316, 200, "Library Office"),
        _box(100, 352, 200, "12 Garden Road"),
    ]

    assert text_from_boxes(boxes) == (
        "Bring the following to the front desk when you register:\n1. an identity card\n"
        "2. proof of address, such as a utility bill or a bank statement\n"
        "（三）一张近期的证件照片，背景为白色，尺寸不小于两寸，不戴帽子。\nLibrary Office\n12 Garden Road"
    )


def test_a_skewed_page_reads_as_a_level_one() -> None:
    level = [
        _box(100, 100, 900, "Readers who need a quiet room can book one at the front"),
        _box(100, 136, 400, "desk."),
        _box(560, 136, 440, "姓名"),
        _box(100, 200, 900, "The library closes at six on weekdays."),
    ]

    for degrees in (-4, 4):
        assert text_from_boxes([_turned(box, degrees) for box in reversed(level)]) == text_from_boxes(level)


def test_boxes_far_apart_on_a_line_are_kept_apart_by_a_space() -> None:
    boxes = [_box(100, 100, 120, "姓名"), _box(400, 100, 120, "张三"), _box(520, 100, 60, "丰")]

    assert text_from_boxes(boxes) == "姓名 张三丰"


def test_low_confidence_readings_and_empty_boxes_are_dropped() -> None:
    boxes = [_box(100, 100, 400, "库存清单"), _box(100, 136, 30, "丨", score=0.3), _box(100, 172, 30, " ")]

    assert text_from_boxes(boxes) == "库存清单"
    assert text_from_boxes([]) == ""


def test_dropped_spaces_between_english_words_are_put_back() -> None:
    boxes = [
        _box(
            100,
            100,
            900,
            "更换冷却系统的maintenanceofpumps,valves and airflow sensors,see Invoice onnxruntime",
        )
    ]

    # Words the list knows stay whole ("airflow", not "air flow"; "Invoice", not "In voice"), and so do
    # runs it cannot cut into common words.
    assert text_from_boxes(boxes) == (
        "更换冷却系统的maintenance of pumps, valves and airflow sensors, see Invoice onnxruntime"
    )


def test_spaces_and_ascii_punctuation_inside_chinese_are_normalized() -> None:
    boxes = [
        _box(100, 100, 900, "航班 在 六小时以内的,原则上乘坐经济舱;航程更长的航班,"),
        _box(100, 136, 300, "可以预订"),
    ]

    assert text_from_boxes(boxes) == "航班在六小时以内的，原则上乘坐经济舱；航程更长的航班，可以预订"


# --- the engine on rendered pages -----------------------------------------------------------------


def test_reads_a_rendered_english_page() -> None:
    image = _page(_wrapped(ENGLISH, width=900, chinese=False, serif=True), serif=True)

    text = recognize(image)

    assert _error_rate(" ".join(text.split()), " ".join(ENGLISH)) < 0.05
    assert len(text.split("\n\n")) == 2


def test_reads_a_rendered_chinese_page() -> None:
    image = _page(_wrapped(CHINESE, width=900, chinese=True))

    text = recognize(image)

    assert _error_rate(re.sub(r"\s", "", text), "".join(CHINESE)) < 0.05
    assert len(text.split("\n\n")) == 2


def test_images_without_text_read_as_nothing_however_thin() -> None:
    for size in ((4000, 3), (3, 4000), (1, 1), (2500, 300)):
        assert recognize(Image.new("RGB", size, "white")) == ""


# --- images as uploads ----------------------------------------------------------------------------


def test_an_image_without_text_is_refused() -> None:
    with pytest.raises(DocumentParseError, match="no text was found in the image"):
        parse_image(_png(Image.new("RGB", (800, 600), "white")))


def test_a_file_pillow_cannot_read_is_refused_with_a_reason() -> None:
    with pytest.raises(
        DocumentParseError, match="the image is damaged or is not a PNG, JPEG, TIFF or WebP image"
    ):
        parse_image(b"GIF89a" + bytes(100))


def test_a_tiff_page_over_the_pixel_limit_is_refused_before_it_is_decoded() -> None:
    pages = [Image.new("1", (100, 100), 1), Image.new("1", (10_000, 9_000), 1)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:], compression="group4")

    with pytest.raises(DocumentParseError, match=r"page 2 \(10000x9000\) has more than 89 million pixels"):
        parse_image(buffer.getvalue())


def test_the_exif_orientation_is_applied() -> None:
    upright = _page([(0, "Return books to the front desk")], width=700)
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90° clockwise to display
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=90, exif=exif)

    document = parse_image(buffer.getvalue())

    assert document.text == "Return books to the front desk"
    assert (document.file_type, document.ocr_pages, document.headings) == (FileType.IMAGE, (1,), ())


def test_text_on_a_transparent_background_is_read() -> None:
    # Black text on transparent black: dropping the alpha channel would leave black on black.
    ink = _page([(0, "透明背景上的文字")], width=500).convert("L")
    alpha = Image.eval(ink, lambda value: 255 - value)
    image = Image.merge("RGBA", (*Image.new("RGB", ink.size, "black").split(), alpha))

    assert parse_image(_png(image)).text == "透明背景上的文字"


def test_a_16_bit_greyscale_scan_is_read() -> None:
    grey = (
        np.asarray(_page([(0, "十六位灰度扫描 16-bit greyscale")], width=600).convert("L"), dtype=np.uint16)
        * 257
    )
    image = Image.fromarray(grey)
    assert image.mode == "I;16"

    assert parse_image(_png(image)).text == "十六位灰度扫描16-bit greyscale"


@pytest.mark.skipif(sys.platform == "win32", reason="resource limits need POSIX")
def test_a_decompression_bomb_is_refused_in_the_parse_process() -> None:
    # 20000 x 20000 one-bit pixels compress to ~50 kB and would decode to 400 million.
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")

    with pytest.raises(
        DocumentParseError, match=r"the image is too large to read: .* more than 89 million pixels"
    ):
        parse_in_subprocess(buffer.getvalue(), FileType.IMAGE, timeout_seconds=30, memory_mb=2048)


@pytest.mark.skipif(sys.platform == "win32", reason="resource limits need POSIX")
def test_every_page_of_a_tiff_is_read_in_the_limited_parse_process() -> None:
    pages = [
        _page([(0, "Page one: opening hours")], width=600),
        _page([(0, "第二页：借阅规则")], width=600),
    ]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")

    # The default memory limit of the parse child (Settings.parse_memory_mb) holds the engine and a page.
    heard: list[tuple[int, int]] = []
    document = parse_in_subprocess(
        buffer.getvalue(),
        FileType.IMAGE,
        timeout_seconds=60,
        memory_mb=2048,
        on_pages=lambda done, total: heard.append((done, total)),
    )
    # Each page, as it is read, reaches this process through the child's result pipe.
    assert heard == [(1, 2), (2, 2)]

    assert document.text == "Page one: opening hours\n\n第二页：借阅规则"
    assert document.ocr_pages == (1, 2)
