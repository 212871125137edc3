"""OCR accuracy and speed: pages rendered from known Chinese and English text, read by ``ingest.ocr.recognize``.

Each page is an A4 sheet rendered with Pillow at ``--dpi`` (150 by default, a common scan and fax setting):
a heading at 16 pt and paragraphs of body text at 11 pt with 1.5 line spacing, in Noto Serif and Noto Sans
(alternating by page). English is set ragged right, paragraphs apart by most of a blank line; Chinese with
each paragraph's first line indented by two ideographs and no extra space, as Chinese documents are set,
and with a few English terms in it, as Chinese technical writing has. The prose is our own, written for this
benchmark. The fonts come from the ``pylopdf-fonts-zh-cn`` package (SIL Open Font License), so the pages
are the same on every machine.

A photographed-style copy of the first page of each language is read too: turned by 3°, lit unevenly,
blurred, with sensor noise, saved as a JPEG at quality 60 and decoded again.

Reported per language, over its clean pages and for its photographed page apart:

* character error rate: the edit distance between the recognized and the rendered text over the length of
  the rendered text. Chinese is compared with all whitespace removed (where lines and paragraphs break is
  layout, not recognition); English with every run of whitespace as one space.
* seconds per page: wall time of ``recognize`` and the process's CPU time (all threads) during it; the
  engine's one-off load is timed apart. Wall time on a shared machine moves with its other load.

Run from the repository root (needs the ``dev`` extra, which brings the fonts)::

    python bench/ocr.py                    # 3 clean pages per language + 2 photographed pages
    python bench/ocr.py --pages 1 --show   # one page each, printing what was read
    python bench/ocr.py --dpi 200 --save /tmp/pages   # keep the rendered PNGs to look at

Prints a line per page, then one JSON line with every number.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/ocr.py` puts bench/ first on sys.path, where bench/ingest.py would shadow the `ingest` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import io
import json
import os
import platform
import re
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pylopdf_fonts_zh_cn
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ingest.ocr import recognize

PAGE_INCHES = (8.27, 11.69)  # A4
MARGIN_INCHES = 1.0
BODY_POINTS = 11
HEADING_POINTS = 16
LINE_SPACING = 1.5
# Space between English paragraphs, in lines of body text.
PARAGRAPH_SPACE = 0.8
# Chinese never starts a line with these; they hang at the end of the previous one instead.
NO_LINE_START = set("，。、；：！？）」』》”’…—")

ENGLISH_PAGES = (
    (
        "Cooling System Maintenance",
        "Quarterly maintenance of the cooling system begins with a visual check of every pump, valve and "
        "gauge listed in the site register. Technicians record the reading of each pressure gauge before "
        "touching anything, because a slow drift over several quarters often reveals a failing seal long "
        "before it starts to leak.",
        "The condenser coils are cleaned with a soft brush and low-pressure water. High-pressure washers bend "
        "the aluminium fins and reduce the airflow, so they are not allowed on site. After cleaning, the fan "
        "motors are run for ten minutes while the technician listens for bearing noise and checks that the "
        "current drawn stays within the range printed on the motor plate.",
        "Coolant samples go to the laboratory in the sealed bottles supplied with the maintenance kit. The "
        "report usually arrives within five working days; if the glycol concentration has fallen below "
        "thirty percent, the loop is topped up before the first frost, not after it.",
        "Any fault that cannot be repaired during the visit is logged with a photograph, the equipment tag "
        "and an estimate of the parts required. The facilities manager reviews open faults every Monday and "
        "decides which of them justify an emergency order.",
    ),
    (
        "Travel and Expense Policy",
        "Employees who travel on company business are reimbursed for reasonable costs that are supported by "
        "receipts. Economy class is the default for flights shorter than six hours; longer journeys may be "
        "booked in premium economy when the traveller is expected to work on the day of arrival.",
        "Hotel bookings should be made through the approved agency, which negotiates rates with chains in "
        "most cities we visit. A room booked elsewhere is reimbursed up to the agency rate for the same "
        "night, and the difference is the traveller's to pay unless the approved hotels were fully booked.",
        "Meals are covered by a daily allowance rather than by itemised receipts. The allowance depends on "
        "the city and is published in the finance handbook each January. Alcohol is never reimbursed, "
        "including at client dinners, where the most senior employee present pays for it personally.",
        "Claims must be submitted within thirty days of returning. Late claims are still paid, but they are "
        "reviewed by the department head, who may ask for an explanation before approving them.",
    ),
    (
        "Release Notes for Version 4.2",
        "This release focuses on reliability under heavy load. The scheduler now spreads background jobs "
        "across all available workers instead of filling the first one, which removes the long pauses that "
        "some customers reported during nightly imports.",
        "Search results are returned in roughly half the time for collections larger than one million "
        "documents. The improvement comes from caching the most frequently used filters in memory and from "
        "a rewritten ranking step that avoids sorting candidates it is about to discard.",
        "Administrators can export the audit log as a spreadsheet, filtered by user, date range or type of "
        "action. Exports larger than one hundred thousand rows are prepared in the background and offered "
        "for download once they are ready, so the browser no longer times out.",
        "Two older options have been retired. The legacy import format, deprecated eighteen months ago, is "
        "no longer accepted, and the setting that disabled password expiry has been removed because it was "
        "ignored by the identity provider anyway.",
    ),
)

CHINESE_PAGES = (
    (
        "冷却系统季度维护规程",
        "冷却系统的季度维护从目视检查开始。技术人员需要逐一核对登记册中列出的每台水泵、每个阀门和每块仪表，"
        "并在动手之前记下各压力表的读数。连续几个季度的缓慢变化，往往能在渗漏出现之前很久就暴露出密封件的老化。",
        "冷凝器盘管应使用软毛刷和低压清水清洗。高压清洗机会压弯铝制翅片，降低通风量，因此现场一律禁止使用。"
        "清洗完成后，风机需连续运转十分钟，技术人员在此期间注意倾听轴承有无异响，并确认电流不超过铭牌上标注的范围。",
        "冷却液样品须装入维护工具包中配发的密封瓶，送交实验室化验。化验报告通常在五个工作日内返回；"
        "如果乙二醇浓度已低于百分之三十，必须在第一次霜冻之前补充，而不是等到霜冻之后。",
        "巡检中无法当场修复的故障，应连同照片、设备编号和所需备件的估计一并登记。设施经理每周一审阅所有未关闭的故障，"
        "决定其中哪些需要紧急采购。",
        "每次维护结束后，技术人员在 EAM 系统中填写工作记录，注明用时、更换的部件和下一次检查的建议日期。",
    ),
    (
        "差旅与报销管理办法",
        "员工因公出差所发生的合理费用，凭有效票据予以报销。飞行时间在六小时以内的航班，原则上乘坐经济舱；"
        "航程更长且抵达当天需要工作的，可以预订超级经济舱。",
        "酒店应通过公司指定的差旅服务商（travel agency）预订，服务商已与大多数常去城市的连锁酒店签订协议价格。"
        "自行预订的，按同一晚的协议价格报销，差额由出差人自行承担，但指定酒店全部客满的情况除外。",
        "餐费实行每日定额补贴，不再逐笔凭票报销。补贴标准因城市而异，于每年一月在财务手册中公布。"
        "酒水一律不予报销，包括招待客户的宴请在内，此类费用由在场职级最高的员工自行支付。",
        "报销申请应在返回后三十日内提交。逾期提交的申请仍可办理，但须经部门负责人审核，必要时需书面说明原因。",
        "财务部门每季度抽查一部分报销单据，发现虚报或重复报销的，除追回款项外，还将按照员工手册的规定处理。",
    ),
    (
        "软件四点二版发布说明",
        "本次发布的重点是高负载下的可靠性。调度器现在会把后台任务分摊到所有可用的 worker 进程上，而不是先把第一个进程占满，"
        "这消除了部分客户在夜间批量导入时遇到的长时间停顿。",
        "对于超过一百万份文档的集合，搜索结果的返回时间缩短了大约一半。这一改进来自两个方面：一是把最常用的过滤条件缓存在内存中，"
        "二是重写了排序步骤，不再对即将被丢弃的候选结果进行排序。",
        "管理员现在可以把审计日志导出为 Excel 表格，并按用户、日期范围或操作类型进行筛选。超过十万行的导出会在后台生成，"
        "完成后再提供下载，浏览器因此不会再出现超时。",
        "两个旧选项已被移除。十八个月前宣布弃用的旧版导入格式不再被接受；用于关闭密码过期的设置也已删除，"
        "因为身份认证服务本来就会忽略它。",
        "升级前请备份 PostgreSQL 数据库和配置文件。从四点零版以前的版本升级时，需要先升级到四点一版，再升级到本版本。",
    ),
)


@dataclass(frozen=True)
class Page:
    language: str  # "en" | "zh"
    kind: str  # "clean" | "photo"
    number: int
    image: Image.Image
    text: str  # what was rendered, paragraphs apart by blank lines


@dataclass(frozen=True)
class PageResult:
    language: str
    kind: str
    page: int
    cer: float
    characters: int  # of the rendered text, as compared
    seconds: float
    cpu_seconds: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=3, help="clean pages per language (1-3)")
    parser.add_argument("--dpi", type=int, default=150)
    parser.add_argument("--no-photo", action="store_true", help="skip the photographed-style pages")
    parser.add_argument("--show", action="store_true", help="print what was read on each page")
    parser.add_argument("--save", type=Path, help="write each rendered page to this folder as PNG")
    args = parser.parse_args()
    if not 1 <= args.pages <= len(ENGLISH_PAGES):
        parser.error(f"--pages must be 1 to {len(ENGLISH_PAGES)}")

    pages = rendered_pages(args.pages, args.dpi, photo=not args.no_photo)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for page in pages:
            page.image.save(args.save / f"{page.language}-{page.kind}-{page.number}.png")

    # The first call loads the models; a blank image costs little else.
    load_started = time.perf_counter()
    recognize(Image.new("RGB", (64, 64), "white"))
    load_seconds = time.perf_counter() - load_started

    results = []
    for page in pages:
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        read = recognize(page.image)
        seconds = time.perf_counter() - started
        result = PageResult(
            language=page.language,
            kind=page.kind,
            page=page.number,
            cer=character_error_rate(read, page.text, page.language),
            characters=len(_comparable(page.text, page.language)),
            seconds=seconds,
            cpu_seconds=_cpu_seconds() - cpu_before,
        )
        results.append(result)
        print(
            f"{page.language} {page.kind:5} page {page.number}: CER {result.cer:6.2%}  {seconds:5.2f} s "
            f"(CPU {result.cpu_seconds:5.2f} s)  {page.image.size[0]}x{page.image.size[1]} px"
        )
        if args.show:
            print(read, end="\n\n")

    groups: dict[tuple[str, str], list[PageResult]] = {}
    for r in results:
        groups.setdefault((r.language, r.kind), []).append(r)
    summary = {
        "dpi": args.dpi,
        "cpus": len(os.sched_getaffinity(0)),
        "processor": platform.processor() or platform.machine(),
        "engine_load_seconds": round(load_seconds, 3),
        "summary": {f"{language}_{kind}": _summarize(group) for (language, kind), group in groups.items()},
        "pages": [asdict(r) for r in results],
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def rendered_pages(count: int, dpi: int, *, photo: bool) -> list[Page]:
    pages = []
    for language, texts in (("en", ENGLISH_PAGES), ("zh", CHINESE_PAGES)):
        for number, (heading, *paragraphs) in enumerate(texts[:count], start=1):
            image = render_page(
                heading, paragraphs, language=language, dpi=dpi, serif=(number % 2 == 1) == (language == "en")
            )
            text = "\n\n".join([heading, *paragraphs])
            pages.append(Page(language, "clean", number, image, text))
            if photo and number == 1:
                pages.append(Page(language, "photo", number, photographed(image, seed=number), text))
    return pages


def render_page(
    heading: str, paragraphs: Sequence[str], *, language: str, dpi: int, serif: bool
) -> Image.Image:
    """An A4 page: ``heading`` in large type, then ``paragraphs`` wrapped to the text width."""
    font_path = pylopdf_fonts_zh_cn.serif_path() if serif else pylopdf_fonts_zh_cn.sans_path()
    body = ImageFont.truetype(str(font_path), round(BODY_POINTS / 72 * dpi))
    title = ImageFont.truetype(str(font_path), round(HEADING_POINTS / 72 * dpi))
    width, height = round(PAGE_INCHES[0] * dpi), round(PAGE_INCHES[1] * dpi)
    margin = round(MARGIN_INCHES * dpi)
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    text_width = width - 2 * margin
    body_pitch = round(body.size * LINE_SPACING)

    y = margin
    draw.text((margin, y), heading, font=title, fill=0)
    y += round(title.size * LINE_SPACING) + round(body_pitch * PARAGRAPH_SPACE)
    for paragraph in paragraphs:
        indent = round(2 * body.size) if language == "zh" else 0
        for number, line in enumerate(_wrap(paragraph, body, text_width, indent=indent, language=language)):
            draw.text((margin + (indent if number == 0 else 0), y), line, font=body, fill=0)
            y += body_pitch
        if language == "en":
            y += round(body_pitch * PARAGRAPH_SPACE)
    if y > height - margin:
        raise ValueError(f"the text does not fit one page at {dpi} dpi")
    return page.convert("RGB")


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int, *, indent: int, language: str) -> list[str]:
    lines: list[str] = []
    current = ""
    room = width - indent
    # Chinese breaks between any two ideographs, but never inside an English word set among them.
    units = re.findall(r"[A-Za-z0-9]+|.", text) if language == "zh" else text.split(" ")
    joiner = "" if language == "zh" else " "
    for unit in units:
        candidate = f"{current}{joiner}{unit}" if current else unit
        if font.getlength(candidate) <= room or not current or unit in NO_LINE_START:
            current = candidate
        else:
            lines.append(current)
            current, room = unit, width
    lines.append(current)
    return lines


def photographed(page: Image.Image, *, seed: int) -> Image.Image:
    """``page`` as a phone photo of it might come out: skewed, unevenly lit, soft, noisy, JPEG-compressed."""
    rng = np.random.default_rng(seed)
    paper = (236, 232, 222)
    turned = page.rotate(3, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=paper)
    pixels = np.asarray(turned.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32)
    # Light falling off from the top left towards the bottom right corner, to about 60 %.
    height, width = pixels.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width]
    light = 1.0 - 0.4 * (xs / width + ys / height) / 2
    pixels = pixels * light[..., None] * (np.array(paper) / 255)
    pixels += rng.normal(0, 10, pixels.shape)
    noisy = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, "JPEG", quality=60)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def character_error_rate(read: str, expected: str, language: str) -> float:
    reference = _comparable(expected, language)
    return edit_distance(_comparable(read, language), reference) / max(1, len(reference))


def _comparable(text: str, language: str) -> str:
    if language == "zh":
        return re.sub(r"\s+", "", text)
    return " ".join(text.split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions of one character, each costing 1."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _summarize(results: Sequence[PageResult]) -> dict[str, float]:
    characters = sum(r.characters for r in results)
    return {
        "pages": len(results),
        # Over all the group's characters, so that a short page does not weigh as much as a full one.
        "cer": round(sum(r.cer * r.characters for r in results) / characters, 5),
        "seconds_per_page": round(statistics.mean(r.seconds for r in results), 2),
        "cpu_seconds_per_page": round(statistics.mean(r.cpu_seconds for r in results), 2),
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    raise SystemExit(main())
