"""E-mail: EML and Outlook MSG, headers as metadata, attachments parsed in turn.

A mail reads as one text: the Subject as a level-1 heading, a block of its From, To, Cc and Date lines (so
"who sent the mail about X" is answered from the text itself), the body, then each attachment under a level-2
heading ``Attachment: <name>`` with the attachment's own headings moved below it. A forwarded mail (a
``message/rfc822`` part, an embedded MSG, an attached .eml or .msg) is laid out the same way, one level
deeper. Attachments we cannot read leave a note line ``[attachment <name> skipped: <reason>]`` in their place.

Mail is a container an attacker controls, so the walk is bounded: forwarded mails at most ``MAX_DEPTH`` deep,
at most ``MAX_PARTS`` MIME parts or attachments in all, at most ``MAX_ATTACHMENT_BYTES`` of attachments
handed to parsers. Past a bound the mail is still read, with a note saying what was left out. A mail whose
MIME structure alone is too large to parse safely (more than ``MAX_MIME_DELIMITERS`` part delimiters, which
is also how ten thousand nested attachments look) is refused before parsing.
"""

from __future__ import annotations

import codecs
import datetime
import email.errors
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import io
import itertools
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from app.rag.errors import DocumentParseError, UnsupportedFileTypeError
from app.rag.filetypes import detect_file_type
from app.rag.types import FileType, Heading, ParsedDocument
from ingest.formats.builder import DocumentBuilder, clean_block, one_line
from ingest.parsing import decode_text, parse_document

if TYPE_CHECKING:
    from extract_msg.attachments import AttachmentBase, SignedAttachment
    from extract_msg.msg_classes import MSGFile

# Forwarded mails inside forwarded mails: five levels is more than any real thread nests attachments.
MAX_DEPTH = 5
# MIME parts walked (containers included), or MSG attachments, over a mail and all it forwards.
MAX_PARTS = 1_000
# Attachment bytes handed to parsers over a whole mail; each parser has its own limits on what it inflates.
MAX_ATTACHMENT_BYTES = 64 * 1024 * 1024
# Python's e-mail parser takes ~0.2 ms per part and more with depth (10,000 parts: ~2 s; 100,000: ~27 s), and
# recurses once per level of nesting. Counting delimiter lines first is linear and cheap.
MAX_MIME_DELIMITERS = 10_000

_HEADER_FIELDS = ("From", "To", "Cc", "Date")
_NO_SUBJECT = "(no subject)"
_FORWARDED_NAME = "forwarded message"
_MAX_REASON_CHARS = 160

# Labels whose text is routinely written with the larger codec of the same family: mail marked GB2312 often
# holds GBK characters, and Big5 mail Windows' additions.
_CHARSET_SUPERSETS = {
    **dict.fromkeys(("gb2312", "gbk", "x-gbk", "euc-cn", "cp936", "csgb2312", "chinese"), "gb18030"),
    **dict.fromkeys(("big5", "x-big5", "cn-big5", "csbig5"), "cp950"),
    **dict.fromkeys(("iso-8859-1", "latin1", "latin-1", "windows-1252"), "cp1252"),
}
# Signatures and other parts that are not content; noting each as skipped would only add noise.
_SILENT_TYPES = frozenset(
    {
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
        "application/pgp-signature",
        "application/pgp-keys",
    }
)
_BOUNDARY_PARAM = re.compile(rb"""boundary\s*=\s*(?:"([^"\r\n]+)"|([^\s;"]+))""", re.IGNORECASE)
_DELIMITER_LINE = re.compile(rb"^--([^\r\n]*)", re.MULTILINE)


@dataclass
class _Walk:
    """What one uploaded mail may still spend, shared by every mail it forwards."""

    parts_left: int
    bytes_left: int
    # Set once the note that the part budget ran out was written.
    truncated: bool = False

    @classmethod
    def start(cls) -> _Walk:
        return cls(parts_left=MAX_PARTS, bytes_left=MAX_ATTACHMENT_BYTES)

    def take_part(self) -> bool:
        """Spend one part; False once the budget is spent."""
        if self.parts_left <= 0:
            return False
        self.parts_left -= 1
        return True

    def note_truncation(self, builder: _MailBuilder) -> None:
        """Say where the walk stopped, once: the mails that forward this one end quietly."""
        if not self.truncated:
            self.truncated = True
            builder.note(f"the rest of this mail was skipped: it has more than {MAX_PARTS:,} parts")


class _MailBuilder(DocumentBuilder):
    """A ``DocumentBuilder`` that can also take in a whole parsed document (an attachment's, an HTML body's)."""

    def __init__(self, file_type: FileType) -> None:
        super().__init__(file_type)
        self._embedded_headings: list[Heading] = []

    def embed(self, document: ParsedDocument, level_shift: int) -> None:
        """Append ``document``'s text with its headings ``level_shift`` levels deeper.

        The text is cut at its headings and each piece appended as a block, so every heading lands at the
        start of a block, exactly where its piece starts (``clean_block`` only trims the piece's ends).
        """
        text = document.text
        headings_at: dict[int, list[Heading]] = {}
        for heading in document.headings:
            if 0 <= heading.start < len(text):
                headings_at.setdefault(heading.start, []).append(heading)
        cuts = sorted({0, *headings_at, len(text)})
        pending: list[Heading] = []
        for start, end in itertools.pairwise(cuts):
            pending.extend(headings_at.get(start, ()))
            piece = clean_block(text[start:end])
            if not piece:
                continue
            self.block(piece)
            position = self.length - len(piece)
            self._embedded_headings.extend(
                Heading(position, min(heading.level + level_shift, 6), heading.title) for heading in pending
            )
            pending = []

    def note(self, text: str) -> None:
        self.block(f"[{text}]")

    def build(self, title: str = "") -> ParsedDocument:
        document = super().build(title)
        headings = sorted((*document.headings, *self._embedded_headings), key=lambda heading: heading.start)
        return replace(document, headings=tuple(headings))


# --- EML ------------------------------------------------------------------------------------------


def parse_eml(data: bytes) -> ParsedDocument:
    return _with_content(_eml_document(data, _Walk.start(), depth=0))


def _eml_document(data: bytes, walk: _Walk, *, depth: int) -> ParsedDocument:
    return _email_document(_read_eml(data), walk, depth=depth)


def _email_document(message: email.message.EmailMessage, walk: _Walk, *, depth: int) -> ParsedDocument:
    builder = _MailBuilder(FileType.EML)
    subject = _write_headers(
        builder, {name: _header_text(message, name) for name in ("Subject", *_HEADER_FIELDS)}
    )
    body_parts, attachments, complete = _split_parts(message, walk)
    for part in body_parts:
        _write_eml_body(builder, part)
    for attachment in attachments:
        _write_eml_attachment(builder, attachment, walk, depth=depth)
    if not complete:
        walk.note_truncation(builder)
    return builder.build(subject)


def _read_eml(data: bytes) -> email.message.EmailMessage:
    delimiters = _count_mime_delimiters(data)
    if delimiters > MAX_MIME_DELIMITERS:
        raise DocumentParseError(
            f"the e-mail has {delimiters:,} MIME part delimiters, over the limit of {MAX_MIME_DELIMITERS:,}; "
            "it is not a mail we can read safely"
        )
    parser = email.parser.BytesParser(policy=email.policy.default)
    try:
        message = parser.parsebytes(data)
    except RecursionError as exc:
        # Nesting without delimiters (message/rfc822 in message/rfc822...) still reaches the parser's recursion.
        raise DocumentParseError(
            "the e-mail nests its parts too deeply to read; it may be damaged or built to attack mail readers"
        ) from exc
    return message


def _count_mime_delimiters(data: bytes) -> int:
    """Lines that open or close a part of a boundary the mail declares: an upper bound on its parts."""
    boundaries = {match.group(1) or match.group(2) for match in _BOUNDARY_PARAM.finditer(data)}
    if not boundaries:
        return 0
    count = 0
    for match in _DELIMITER_LINE.finditer(data):
        line = match.group(1).rstrip(b" \t")
        if line in boundaries or (line.endswith(b"--") and line[:-2] in boundaries):
            count += 1
    return count


def _header_text(message: email.message.Message, name: str) -> str:
    """The header's value with RFC 2047 words decoded by their declared charset (Chinese supersets first)."""
    raw_values = [value for key, value in message.raw_items() if key.lower() == name.lower()]
    if not raw_values:
        return ""
    raw = str(raw_values[0])
    # Headers in raw 8-bit (GBK straight in the header, as old clients send) reach us as surrogate escapes.
    if any("\udc80" <= char <= "\udcff" for char in raw):
        return one_line(_decode_bytes(raw.encode("utf-8", "surrogateescape"), None))
    try:
        chunks = email.header.decode_header(raw)
    # A malformed encoded word (bad base64 padding) fails the whole header; its raw text is still readable.
    except email.errors.HeaderParseError:
        return one_line(raw)
    words = [chunk if isinstance(chunk, str) else _decode_bytes(chunk, charset) for chunk, charset in chunks]
    return one_line("".join(words))


def _split_parts(
    message: email.message.EmailMessage, walk: _Walk
) -> tuple[list[email.message.EmailMessage], list[email.message.EmailMessage], bool]:
    """The mail's body parts and its attachments, in order, and whether the part budget reached them all.

    Of each multipart/alternative only the preferred alternative is taken.
    """
    body_parts: list[email.message.EmailMessage] = []
    attachments: list[email.message.EmailMessage] = []
    # Iterative: a hostile mail nests hundreds of multiparts below what the parser's recursion allowed.
    stack: list[email.message.EmailMessage] = [message]
    while stack and walk.take_part():
        part = stack.pop()
        content_type = part.get_content_type()
        if content_type == "multipart/alternative":
            preferred = _preferred_alternative(_subparts(part))
            if preferred is not None:
                stack.append(preferred)
        elif part.get_content_maintype() == "multipart":
            stack.extend(reversed(_subparts(part)))
        elif part.get_content_maintype() == "message" or _is_attachment(part):
            attachments.append(part)
        elif content_type in ("text/plain", "text/html"):
            body_parts.append(part)
        # What is left is inline decoration (images of a signature, a logo) and signatures: not content.
    return body_parts, attachments, not stack


def _subparts(part: email.message.EmailMessage) -> list[email.message.EmailMessage]:
    payload = part.get_payload()
    if not isinstance(payload, list):
        return []
    return [sub for sub in payload if isinstance(sub, email.message.EmailMessage)]


def _preferred_alternative(
    alternatives: list[email.message.EmailMessage],
) -> email.message.EmailMessage | None:
    """Plain text first (it is what the sender wrote), then HTML, then whatever the last alternative is."""
    for wanted in ("text/plain", "multipart/related", "multipart/mixed", "text/html"):
        for alternative in alternatives:
            if alternative.get_content_type() == wanted and not _is_attachment(alternative):
                return alternative
    return alternatives[-1] if alternatives else None


def _is_attachment(part: email.message.EmailMessage) -> bool:
    content_type = part.get_content_type()
    if content_type in _SILENT_TYPES:
        return False
    disposition = part.get_content_disposition()
    if disposition == "attachment":
        return True
    if part.get_content_maintype() == "image":
        # An image shown in the body (a logo, a signature) has no attachment disposition.
        return False
    return part.get_filename() is not None or content_type not in ("text/plain", "text/html")


def _write_eml_body(builder: _MailBuilder, part: email.message.EmailMessage) -> None:
    payload = _payload_bytes(part)
    charset = part.get_content_charset()
    if part.get_content_type() == "text/html":
        _write_html_body(builder, _as_unicode_bytes(payload, charset))
    else:
        builder.block(_decode_bytes(payload, charset))


def _write_eml_attachment(
    builder: _MailBuilder, part: email.message.EmailMessage, walk: _Walk, *, depth: int
) -> None:
    content_type = part.get_content_type()
    if content_type in ("message/rfc822", "message/global"):
        forwarded = _subparts(part)
        name = part.get_filename() or _FORWARDED_NAME
        if forwarded:
            message = forwarded[0]
            _write_forwarded(builder, name, depth, lambda level: _email_document(message, walk, depth=level))
        return
    name = part.get_filename() or f"attachment{mimetypes.guess_extension(content_type) or ''}"
    payload = _payload_bytes(part)
    if part.get_content_maintype() == "text":
        payload = _as_unicode_bytes(payload, part.get_content_charset())
    _write_file_attachment(builder, name, payload, walk, depth=depth)


def _payload_bytes(part: email.message.EmailMessage) -> bytes:
    # Decodes base64 and quoted-printable; damaged encodings come back as best-effort bytes, never an error.
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


# --- MSG ------------------------------------------------------------------------------------------


def parse_msg(data: bytes) -> ParsedDocument:
    return _with_content(_msg_document(data, _Walk.start(), depth=0))


def _msg_document(data: bytes, walk: _Walk, *, depth: int) -> ParsedDocument:
    # extract-msg takes ~0.3 s to import; only processes that meet an MSG file pay for it.
    import extract_msg
    from extract_msg.enums import ErrorBehavior

    # A file object, never bytes: olefile takes bytes shorter than 1,536 for a path name and opens that file.
    # Attachments are delayed so that embedded mails are opened one level at a time, as we walk them; a bad
    # attachment or body becomes an object we can skip instead of failing the whole mail.
    item = extract_msg.openMsg(
        io.BytesIO(data),
        delayAttachments=True,
        errorBehavior=ErrorBehavior.ATTACH_SUPPRESS_ALL
        | ErrorBehavior.RTFDE
        | ErrorBehavior.STANDARDS_VIOLATION
        | ErrorBehavior.NAMED_NAME_STREAM,
    )
    try:
        return _outlook_document(item, walk, depth=depth)
    finally:
        item.close()


def _outlook_document(item: MSGFile, walk: _Walk, *, depth: int) -> ParsedDocument:
    from extract_msg.msg_classes import MessageBase

    if not isinstance(item, MessageBase):
        raise DocumentParseError(
            f"the Outlook file holds an item of class {item.classType or 'unknown'}, not a mail we can read"
        )
    builder = _MailBuilder(FileType.MSG)
    headers = {
        "Subject": one_line(item.subject or ""),
        "From": one_line(item.sender or ""),
        "To": one_line(item.to or ""),
        "Cc": one_line(item.cc or ""),
        "Date": _outlook_date(item.date),
    }
    subject = _write_headers(builder, headers)
    body = item.body
    if isinstance(body, str) and body.strip():
        builder.block(body)
    else:
        html_body = item.htmlBody
        if isinstance(html_body, bytes):
            _write_html_body(builder, html_body)
    for attachment in item.attachments:
        if not walk.take_part():
            walk.note_truncation(builder)
            break
        _write_outlook_attachment(builder, attachment, walk, depth=depth)
    return builder.build(subject)


def _outlook_date(date: datetime.datetime | None) -> str:
    """The send time in UTC, as a mail's Date header writes it."""
    from extract_msg.null_date import NullDate

    # Outlook stores UTC; extract-msg turns it into the server's local time, which says nothing to the reader.
    # Its NullDate (the year 4500) is Outlook's "no date".
    if date is None or isinstance(date, NullDate):
        return ""
    utc = date.replace(tzinfo=datetime.UTC) if date.tzinfo is None else date.astimezone(datetime.UTC)
    return email.utils.format_datetime(utc)


def _write_outlook_attachment(
    builder: _MailBuilder, attachment: AttachmentBase | SignedAttachment, walk: _Walk, *, depth: int
) -> None:
    from extract_msg.enums import AttachmentType
    from extract_msg.msg_classes import MSGFile

    # Hidden attachments are the pictures an HTML body shows inline. (Those of a signed mail, which come from
    # its MIME content, have no such flag.)
    if getattr(attachment, "hidden", False):
        return
    name = one_line(attachment.name or "") or "attachment"
    kind = attachment.type
    data = attachment.data
    # An embedded mail's data is the opened mail; a file's, its bytes (custom OLE objects have bytes too).
    if isinstance(data, MSGFile):
        _write_forwarded(builder, name, depth, lambda level: _outlook_document(data, walk, depth=level))
    elif isinstance(data, bytes) and kind in (AttachmentType.DATA, AttachmentType.SIGNED):
        _write_file_attachment(builder, name, data, walk, depth=depth)
    elif kind is AttachmentType.WEB:
        builder.note(f"attachment {name} skipped: it is a link to a file on the web, not the file")
    else:
        builder.note(
            f"attachment {name} skipped: Outlook stored it in a form we cannot read ({kind.name.lower()})"
        )


# --- shared ---------------------------------------------------------------------------------------


def _write_headers(builder: _MailBuilder, headers: dict[str, str]) -> str:
    """The Subject as the level-1 heading, the other fields as a block of lines; return the title."""
    subject = headers["Subject"]
    builder.heading(1, subject or _NO_SUBJECT)
    lines = [f"{name}: {headers[name]}" for name in _HEADER_FIELDS if headers[name]]
    builder.block("\n".join(lines))
    builder.metadata.extend((name, value) for name, value in headers.items() if value)
    return subject or _NO_SUBJECT


def _with_content(document: ParsedDocument) -> ParsedDocument:
    # The placeholder heading alone is no document: the file had no subject, headers, body or attachment.
    if document.text == _NO_SUBJECT:
        raise DocumentParseError("the e-mail has no subject, sender, body or attachment")
    return document


def _write_html_body(builder: _MailBuilder, html: bytes) -> None:
    # Imported where used: ingest.parsing imports this module to dispatch to it.
    try:
        document = parse_document(html, FileType.HTML)
    except DocumentParseError:
        # An HTML body with no text (an image-only newsletter) is an empty body, not a broken mail.
        return
    # Headings of the body sit below the subject's.
    builder.embed(document, level_shift=1)


def _write_file_attachment(
    builder: _MailBuilder, name: str, payload: bytes, walk: _Walk, *, depth: int
) -> None:
    if len(payload) > walk.bytes_left:
        builder.note(
            f"attachment {name} skipped: the mail's attachments add up to more than "
            f"{MAX_ATTACHMENT_BYTES // 2**20} MiB"
        )
        return
    walk.bytes_left -= len(payload)
    try:
        file_type = detect_file_type(name, payload)
    except UnsupportedFileTypeError as exc:
        builder.note(f"attachment {name} skipped: {_short_reason(exc.message, name)}")
        return
    # Mails attached as files are walked by us, not the dispatcher, so that they share this mail's limits.
    if file_type is FileType.EML:
        _write_forwarded(builder, name, depth, lambda level: _eml_document(payload, walk, depth=level))
        return
    if file_type is FileType.MSG:
        _write_forwarded(builder, name, depth, lambda level: _msg_document(payload, walk, depth=level))
        return
    try:
        document = parse_document(payload, file_type)
    except DocumentParseError as exc:
        builder.note(f"attachment {name} skipped: {_short_reason(exc.message, name)}")
        return
    _write_attachment(builder, name, document)


def _write_forwarded(
    builder: _MailBuilder, name: str, depth: int, render: Callable[[int], ParsedDocument]
) -> None:
    """Render a mail forwarded by the mail at ``depth`` with ``render(its depth)``, within the depth limit."""
    if depth >= MAX_DEPTH:
        builder.note(f"attachment {name} skipped: forwarded mails nest more than {MAX_DEPTH} levels deep")
        return
    try:
        document = render(depth + 1)
    except MemoryError:
        raise
    except DocumentParseError as exc:
        builder.note(f"attachment {name} skipped: {_short_reason(exc.message, name)}")
        return
    except RecursionError:
        builder.note(f"attachment {name} skipped: it is nested too deeply to read")
        return
    # The MSG library raises whatever type the failing line happened to raise on a damaged file, as
    # ``parse_document`` notes for every parser library; to the user each means the attachment is unreadable.
    except Exception as exc:
        builder.note(
            f"attachment {name} skipped: the attached mail is damaged or not readable ({type(exc).__name__})"
        )
        return
    _write_attachment(builder, name, document)


def _write_attachment(builder: _MailBuilder, name: str, document: ParsedDocument) -> None:
    # The attachment's heading is one level below the mail's subject, its own headings below that.
    level = 2
    builder.heading(level, f"Attachment: {name}")
    builder.embed(document, level_shift=level)


def _as_unicode_bytes(payload: bytes, charset: str | None) -> bytes:
    """The payload as UTF-8 with a byte-order mark when its declared charset reads it, else as it came.

    The mark makes our text and HTML parsers trust the decoding over a ``<meta charset>`` or a detector.
    """
    text = _decode_declared(payload, charset)
    return payload if text is None else codecs.BOM_UTF8 + text.encode("utf-8")


def _decode_bytes(payload: bytes, charset: str | None) -> str:
    """Text by the declared charset, else by our detection, else the declared charset with replacements."""
    text = _decode_declared(payload, charset)
    if text is not None:
        return text
    try:
        return decode_text(payload)
    except DocumentParseError:
        return payload.decode(_codec(charset) or "utf-8", "replace")


def _decode_declared(payload: bytes, charset: str | None) -> str | None:
    codec = _codec(charset)
    if codec is None:
        return None
    try:
        return payload.decode(codec)
    except UnicodeDecodeError:
        return None


def _codec(charset: str | None) -> str | None:
    """The Python codec for a mail's charset label, a superset where one is customary; None if unknown."""
    if not charset:
        return None
    label = charset.strip().lower()
    try:
        return codecs.lookup(_CHARSET_SUPERSETS.get(label, label)).name
    except LookupError:
        return None


def _short_reason(message: str, name: str) -> str:
    """A refusal's reason without the file name it starts with or the list of formats it ends with."""
    reason = message.removeprefix(f"{name}: ").split("; supported:")[0]
    return reason if len(reason) <= _MAX_REASON_CHARS else reason[: _MAX_REASON_CHARS - 1] + "…"
