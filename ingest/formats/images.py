"""Images read by OCR: PNG, JPEG, WebP, and TIFF with every page of a multi-page one.

Each page is turned upright from its EXIF orientation and read by ``ingest.ocr.recognize``; the pages' texts
follow each other, apart by a blank line, and all of them are listed as OCR pages. Only the first frame of an
animated PNG or WebP is read: its other frames are animation, not pages.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator

from PIL import Image, ImageOps, TiffImagePlugin, UnidentifiedImageError

from app.rag.errors import DocumentParseError
from app.rag.types import FileType, ParsedDocument
from ingest.ocr import MAX_SIDE, recognize
from ingest.page_progress import report_pages

logger = logging.getLogger(__name__)

# The decoders Pillow may use: what FORMATS accepts as an image, and no other of its many (less tested) ones.
_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP")
# Pillow's own default for Image.MAX_IMAGE_PIXELS, ~89.5 million (a 600 dpi A3 scan, a 64-megapixel photo),
# kept here so that whatever else in the process changes that global does not loosen it, and checked for
# every page of a TIFF before it is decoded.
_MAX_PIXELS = 89_478_485
_TOO_LARGE = (
    "the image is too large to read: {size} has more than {limit} million pixels; "
    "scale it down and upload it again"
)


def parse_image(data: bytes) -> ParsedDocument:
    with _opened(data) as image:
        pages = image.n_frames if isinstance(image, TiffImagePlugin.TiffImageFile) else 1
        texts = []
        for done, page in enumerate(_pages(image, pages), start=1):
            texts.append(recognize(page))
            report_pages(done, pages)
    text = "\n\n".join(text for text in texts if text)
    if not text:
        raise DocumentParseError("no text was found in the image")
    return ParsedDocument(text, FileType.IMAGE, "", (), ocr_pages=tuple(range(1, pages + 1)))


def _opened(data: bytes) -> Image.Image:
    # Pillow warns between its limit and twice it, and raises only above; both are the same refusal here.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=_FORMATS)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            logger.warning("refused an image over the pixel limit: %s", exc)
            raise DocumentParseError(_TOO_LARGE.format(size="it", limit=_MAX_PIXELS // 1_000_000)) from exc
        # Pillow's own message names a BytesIO object.
        except UnidentifiedImageError as exc:
            raise DocumentParseError("the image is damaged or is not a PNG, JPEG, TIFF or WebP image") from exc
    return image


def _pages(image: Image.Image, count: int) -> Iterator[Image.Image]:
    """Each page decoded and upright; a JPEG no larger than OCR reads it."""
    for index in range(count):
        image.seek(index)
        width, height = image.size
        if width * height > _MAX_PIXELS:
            size = f"page {index + 1} ({width}x{height})" if count > 1 else f"it ({width}x{height})"
            raise DocumentParseError(_TOO_LARGE.format(size=size, limit=_MAX_PIXELS // 1_000_000))
        # A JPEG decodes at 1/2, 1/4 or 1/8 of its size for a fraction of the memory and time; the page is
        # scaled down to this for OCR anyway.
        image.draft(None, (MAX_SIDE, MAX_SIDE))
        yield ImageOps.exif_transpose(image)
