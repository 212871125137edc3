"""OCR of page images, offline, with the ONNX models that come inside the RapidOCR wheel.

RapidOCR (PP-OCRv4 detection and recognition, one model for Chinese and English) finds the text boxes of a
page and reads each one; it never downloads anything. Its boxes come in no reliable order, so
``text_from_boxes`` puts them back together as people read them: the page's skew is measured from the boxes
and taken out, boxes that overlap vertically form a line, lines go top to bottom and their boxes left to
right. Lines are then joined into paragraphs: Chinese continues across a line break without a space, Latin
words get one, a word hyphenated at the end of a line is put back together, and a gap clearly taller than the
page's line spacing, a change of type size or an indented first line after a short one starts a new
paragraph (a blank line). A line that ends well before the others (an address, a table row) keeps its line
break, and so does one that starts like a list item. Spaces the recognizer dropped between English words
are put back where an English word list finds the words.

Not handled: several columns side by side (their lines are read across the page), vertical Chinese, and
pages turned 90° (images are turned upright from their EXIF orientation before they get here).

The engine is built once per process, on first use (~0.3 s), never at import: a process that imports this
module for its layout functions alone need not pay for onnxruntime and OpenCV (~450 MiB of address space), and
onnxruntime's thread pools do not survive a fork. A page peaks at ~1.6 GiB of address space in all, inside the parse child's default 2 GiB.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

if TYPE_CHECKING:
    from rapidocr_onnxruntime import RapidOCR

logger = logging.getLogger(__name__)

# Longer sides are scaled down to this first (callers that render pages need not render them larger).
# Detection memory grows with the area: pages up to 2000 px fit the parse child's default 2 GiB limit, 4000 px
# needs ~3 GiB and 4x the time. A 300 dpi A4 scan comes out at ~170 dpi, still ample for body text.
MAX_SIDE = 2000
# Shorter sides are padded up to this, and to a quarter of the longer side. RapidOCR scales a short side below
# 30 px up and detects at a shorter side of at least 736 px: on a thin strip, either would blow the detection
# image up to tens of megapixels, where padding keeps it under ~4.
_MIN_SIDE = 32
_MAX_ASPECT = 4
# Greyscale deeper than 8 bits, as some scanners write TIFFs.
_DEEP_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_SHARPEN = ImageFilter.UnsharpMask(radius=2, percent=250, threshold=0)
# Recognitions below this confidence are mostly specks, rules and texture read as characters.
_MIN_SCORE = 0.5
# On an idle 2-core machine two threads read a page in ~2 s where one takes ~3.7 s; on a busy one they are no
# slower. More would gain little on these small models, and every thread counts against the parse child's
# CPU-time limit (CPU time runs at ~1.2-1.9x the wall time with two).
_MAX_THREADS = 2

# Ideographs, kana, CJK and fullwidth punctuation: scripts written without spaces between words. Hangul,
# which has them, is left out.
_CJK_CLASS = (
    "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3200-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003134f"
)
_CJK = re.compile(f"[{_CJK_CLASS}]")
_SPACES_BETWEEN_CJK = re.compile(f"(?<=[{_CJK_CLASS}])[ \t]+(?=[{_CJK_CLASS}])")
# The recognizer sometimes reads Chinese punctuation as its ASCII look-alike.
_ASCII_PUNCTUATION_IN_CJK = re.compile(f"(?<=[{_CJK_CLASS}])[,;:?!](?=[{_CJK_CLASS}])")
_FULLWIDTH = {",": "，", ";": "；", ":": "：", "?": "？", "!": "！"}
_HYPHENS = ("-", "\u2010")
# A line that starts like a list item starts a line of its own: a bullet, "1." or "2)", "(3)", "一、", "（二）", "①".
_LIST_ITEM = re.compile(
    r"(?:[•·▪◦●○■□◆◇※*\-–]\s|\(?\d{1,3}[.)、](?!\d)|[（(][一二三四五六七八九十\d]{1,3}[)）]|[一二三四五六七八九十]{1,3}、|[①-⑳])"
)
# The recognizer often drops the spaces between English words: in lines mixed with Chinese almost always, in
# soft photos often, after a comma or full stop now and then. Runs of letters no English word list knows are
# split back into words it knows well; shorter runs are more likely abbreviations than glued words.
_LETTER_RUN = re.compile(r"(?<![A-Za-z])[A-Za-z]{5,100}(?![A-Za-z-])")
_GLUED_AFTER_PUNCTUATION = re.compile(r"(?<=[a-z])[,;:](?=[A-Za-z])|(?<=[a-z]{2})[.!?](?=[A-Z][a-z])")
# How common (Zipf frequency: log10 of uses per billion words) a piece must be, by its length, to be taken
# for a word: "of" and "in" but not "nx" or "re", "the" but not "mis".
_MIN_PIECE_ZIPF = {1: 6.0, 2: 5.8, 3: 4.0}
_MIN_LONG_PIECE_ZIPF = 2.0
_LONGEST_PIECE = 20

# Layout thresholds, in units of the page's median line height (the height of a detected box, ~1.3x the type
# size). Measured on rendered pages: the gap between lines of a paragraph is ~0.1, a paragraph break adds
# 0.5 or more, and box edges wander by ~0.1.
_SAME_LINE_OVERLAP = 0.5  # of the smaller box's height, for two boxes to share a line
_LINE_GAP_CAP = 0.8  # gaps above this are never line spacing, whatever most gaps are
_PARAGRAPH_EXTRA_GAP = 0.35  # over the usual line spacing: a paragraph break
_HEADING_SIZE_RATIO = 1.4  # one line this much taller than the next: a different paragraph
_INDENT = 1.0  # a first line indented by this much (two ideographs are ~1.5)
_SHORT_LINE = 4.0  # a line ending this far before the page's usual right edge ended on purpose
_WORD_GAP = 1.0  # boxes on one line this far apart are separate cells: a space even between ideographs


@dataclass(frozen=True)
class TextBox:
    """One box the engine read: its four corners in pixels, clockwise from the top left, text and confidence."""

    corners: tuple[tuple[float, float], ...]
    text: str
    score: float


def recognize(image: Image.Image) -> str:
    """The text of one page image: lines in reading order, joined as people read them."""
    page = _prepared(_rgb(image))
    engine = _engine()
    from rapidocr_onnxruntime.utils.infer_engine import ONNXRuntimeError

    try:
        result, _ = engine(page)
    except ONNXRuntimeError as exc:
        # onnxruntime reports an allocation that failed (at the parse child's memory limit) as a runtime
        # error with std::bad_alloc in its text; the limit's own message says what happened.
        if "bad_alloc" in str(exc):
            raise MemoryError("OCR ran out of memory") from exc
        raise
    boxes = [
        TextBox(tuple((float(x), float(y)) for x, y in corners), str(text), float(score))
        for corners, text, score in result or ()
    ]
    return text_from_boxes(boxes)


def text_from_boxes(boxes: Sequence[TextBox]) -> str:
    """Put boxes back in reading order and join them into paragraphs separated by blank lines."""
    kept = [box for box in boxes if box.score >= _MIN_SCORE and box.text.strip()]
    if not kept:
        return ""
    lines = _lines(_upright(kept))
    height = statistics.median(line.height for line in lines)
    left_margin = _quantile([line.left for line in lines], 0.1)
    right_edge = _quantile([line.right for line in lines], 0.9)
    usual_gap = _usual_gap(lines, height)
    paragraphs: list[str] = []
    text = lines[0].text
    for previous, line in itertools.pairwise(lines):
        gap = line.top - previous.bottom
        shortfall = right_edge - previous.right
        # A first line indented under a line that was not, after a line that stopped short: Chinese
        # paragraphs are set that way, often with no extra space between them.
        first_line = (
            line.left - left_margin > _INDENT * height
            and previous.left - left_margin <= _INDENT * height
            and shortfall > _INDENT * height
        )
        taller = max(line.height, previous.height) > _HEADING_SIZE_RATIO * min(line.height, previous.height)
        if gap - usual_gap > _PARAGRAPH_EXTRA_GAP * height or taller or first_line:
            paragraphs.append(text)
            text = line.text
        elif shortfall > _SHORT_LINE * height or _LIST_ITEM.match(line.text):
            text = f"{text}\n{line.text}"
        else:
            text = join_lines(text, line.text)
    paragraphs.append(text)
    return "\n\n".join(_normalized(paragraph) for paragraph in paragraphs)


def join_lines(before: str, after: str) -> str:
    """Continue ``before`` with the next line of its paragraph, ``after``."""
    if not before or not after:
        return before + after
    if before.endswith(_HYPHENS) and before[-2:-1].isalpha() and after[:1].islower():
        return before[:-1] + after
    if _CJK.match(before[-1]) or _CJK.match(after[0]):
        return before + after
    return f"{before} {after}"


def _normalized(text: str) -> str:
    """``text`` with Chinese punctuation where the recognizer read its ASCII look-alike, and the spaces put
    back that it dropped between English words."""
    text = _ASCII_PUNCTUATION_IN_CJK.sub(lambda match: _FULLWIDTH[match.group()], text)
    text = _GLUED_AFTER_PUNCTUATION.sub(lambda match: f"{match.group()} ", text)
    return _LETTER_RUN.sub(lambda match: " ".join(_words(match.group())), text)


def _words(run: str) -> list[str]:
    """``run`` cut into common words where it is no word of its own and the cut is likelier English."""
    whole = _zipf(run.lower())
    # "Invoice" is a word, however likely "in voice" is.
    if whole >= _MIN_LONG_PIECE_ZIPF:
        return [run]
    # best[end]: the likeliest cut of run[:end] into words, and its log10 probability.
    best: list[tuple[float, list[str]] | None] = [(0.0, []), *([None] * len(run))]
    for end in range(1, len(run) + 1):
        for start in range(max(0, end - _LONGEST_PIECE), end):
            before = best[start]
            piece = run[start:end]
            likelihood = _word_likelihood(piece)
            if before is None or likelihood is None:
                continue
            score = before[0] + likelihood
            current = best[end]
            if current is None or score > current[0]:
                best[end] = (score, [*before[1], piece])
    cut = best[-1]
    if cut is None or len(cut[1]) < 2 or (whole > 0 and whole - 9 >= cut[0]):
        return [run]
    return cut[1]


def _word_likelihood(piece: str) -> float | None:
    """log10 of how often ``piece`` is used as an English word; None if it is too rare to be taken for one."""
    # "System" but not "sYstem": a capital only starts a word.
    if not (piece[1:].islower() or len(piece) == 1):
        return None
    zipf = _zipf(piece.lower())
    if zipf < _MIN_PIECE_ZIPF.get(len(piece), _MIN_LONG_PIECE_ZIPF):
        return None
    return zipf - 9


@functools.lru_cache(maxsize=65536)
def _zipf(word: str) -> float:
    # Imported on first use: most pages never need it, and it loads its word list then (~0.2 s).
    from wordfreq import zipf_frequency

    return float(zipf_frequency(word, "en"))


@dataclass(frozen=True)
class _Placed:
    """A box in upright page coordinates: its extent and its text."""

    left: float
    right: float
    top: float
    bottom: float
    text: str

    @property
    def height(self) -> float:
        return self.bottom - self.top


@dataclass(frozen=True)
class _Line:
    boxes: tuple[_Placed, ...]

    @property
    def left(self) -> float:
        return self.boxes[0].left

    @property
    def right(self) -> float:
        return self.boxes[-1].right

    @property
    def top(self) -> float:
        return statistics.median(box.top for box in self.boxes)

    @property
    def bottom(self) -> float:
        return statistics.median(box.bottom for box in self.boxes)

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def text(self) -> str:
        text = self.boxes[0].text
        for previous, box in itertools.pairwise(self.boxes):
            if box.left - previous.right > _WORD_GAP * self.height:
                text = f"{text} {box.text}"
            else:
                text = join_lines(text, box.text)
        return text


def _upright(boxes: Sequence[TextBox]) -> list[_Placed]:
    """The boxes turned by the page's skew, the median slant of their top edges, so that lines run level."""
    slants = [
        math.atan2(y1 - y0, x1 - x0)
        for box in boxes
        for (x0, y0), (x1, y1), _, (x3, y3) in [box.corners]
        # Only boxes clearly wider than tall say which way the line runs.
        if math.hypot(x1 - x0, y1 - y0) > 2 * math.hypot(x3 - x0, y3 - y0)
    ]
    skew = statistics.median(slants) if slants else 0.0
    cos, sin = math.cos(skew), math.sin(skew)
    placed = []
    for box in boxes:
        xs = [x * cos + y * sin for x, y in box.corners]
        ys = [y * cos - x * sin for x, y in box.corners]
        text = _SPACES_BETWEEN_CJK.sub("", box.text.strip())
        placed.append(_Placed(min(xs), max(xs), min(ys), max(ys), text))
    return placed


def _lines(boxes: Sequence[_Placed]) -> list[_Line]:
    """Boxes grouped into lines by vertical overlap; lines top to bottom, boxes left to right."""
    rows: list[list[_Placed]] = []
    for box in sorted(boxes, key=lambda box: (box.top + box.bottom) / 2):
        row = next((row for row in reversed(rows) if _shares_line(row, box)), None)
        if row is None:
            rows.append([box])
        else:
            row.append(box)
    lines = [_Line(tuple(sorted(row, key=lambda box: box.left))) for row in rows]
    return sorted(lines, key=lambda line: (line.top + line.bottom) / 2)


def _shares_line(row: Sequence[_Placed], box: _Placed) -> bool:
    top = statistics.median(other.top for other in row)
    bottom = statistics.median(other.bottom for other in row)
    overlap = min(bottom, box.bottom) - max(top, box.top)
    if overlap < _SAME_LINE_OVERLAP * min(bottom - top, box.height):
        return False
    # Side by side, not stacked: tightly set lines can overlap vertically, but their boxes are one above the other.
    return all(min(other.right, box.right) - max(other.left, box.left) <= 0 for other in row)


def _usual_gap(lines: Sequence[_Line], height: float) -> float:
    """The blank space between two lines of one paragraph on this page; 0 when no two lines are that close."""
    gaps = [line.top - previous.bottom for previous, line in itertools.pairwise(lines)]
    spacing = [gap for gap in gaps if gap < _LINE_GAP_CAP * height]
    return max(0.0, statistics.median(spacing)) if spacing else 0.0


def _quantile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, transparent parts white, deep greyscale scaled rather than clipped."""
    if image.mode in _DEEP_MODES:
        # Pillow clips 16- and 32-bit values to 255, which turns a 16-bit scan white.
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scale = 255 / (high - low) if high > low else 0.0
        return Image.fromarray(((values - low) * scale).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        # Dropping the alpha channel leaves whatever colour transparent pixels hold, often black under black text.
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


def _prepared(image: Image.Image) -> Image.Image:
    """The page at most ``MAX_SIDE`` long, sharpened, and padded out of extreme thinness in its own colour."""
    if max(image.size) > MAX_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    # The recognizer loses the spaces between English words first when a page is soft (a phone photo, a
    # scan out of focus): on bench/ocr.py's photographed page, sharpening cut its English error rate from
    # 7.5 % to 0.4 % before _normalized, which repairs spacing only for words in its list, and changed nothing
    # on clean pages.
    image = image.filter(_SHARPEN)
    width, height = image.size
    padded_width = max(width, _MIN_SIDE, -(-height // _MAX_ASPECT))
    padded_height = max(height, _MIN_SIDE, -(-width // _MAX_ASPECT))
    if (padded_width, padded_height) == (width, height):
        return image
    background = image.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    padded = Image.new(image.mode, (padded_width, padded_height), background)
    padded.paste(image)
    return padded


@functools.cache
def _engine() -> RapidOCR:
    # Imported here, not at the top: onnxruntime and OpenCV add ~450 MiB of address space to every process
    # that imports this module, parse children of other formats included.
    from rapidocr_onnxruntime import RapidOCR

    threads = min(_MAX_THREADS, len(os.sched_getaffinity(0)))
    logger.debug("loading the OCR models with %s threads", threads)
    return RapidOCR(
        text_score=_MIN_SCORE,
        max_side_len=MAX_SIDE,
        min_side_len=_MIN_SIDE,
        intra_op_num_threads=threads,
        inter_op_num_threads=1,
        # The 0/180° classifier turned a clean English line upside down on the bench pages, which lost it;
        # photos come upright from their EXIF orientation, and pages upside down are rare.
        use_cls=False,
    )
