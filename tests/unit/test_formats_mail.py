"""E-mail parsing (EML and Outlook MSG): headers, bodies, charsets, attachments, forwarded mails, limits.

Every mail is made here: EML files with the standard ``email`` package, MSG files with extract-msg's own OLE
writer, laid out as [MS-OXMSG] describes (the property streams, recipient and attachment storages Outlook
writes), so no third-party sample files are needed.
"""

from __future__ import annotations

import base64
import datetime
import io
import struct
import time
import zipfile
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import docx
import pytest
from extract_msg.ole_writer import OleWriter

from app.rag.errors import DocumentParseError
from app.rag.filetypes import detect_file_type
from app.rag.types import FileType, ParsedDocument
from ingest.chunking import split_document
from ingest.formats import mail
from ingest.formats.mail import parse_eml, parse_msg
from ingest.parse_limits import parse_in_subprocess
from ingest.parsing import parse_document

# The worker's defaults (app.config): what a hostile upload meets in production.
TIMEOUT_SECONDS = 120.0
MEMORY_MB = 2048

SENT = datetime.datetime(2026, 6, 1, 9, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=8)))


def _eml(
    subject: str = "Quarterly budget 季度预算",
    body: str | None = "The budget is 1.2 million yuan.\n预算为 120 万元。",
    html: str | None = None,
) -> EmailMessage:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = Address("张三", "zhang.san", "example.cn")
    message["To"] = "Alice <alice@example.com>, 李四 <li.si@example.cn>"
    message["Cc"] = "Bob <bob@example.com>"
    message["Date"] = SENT
    message["Subject"] = subject
    if body is not None:
        message.set_content(body)
    if html is not None:
        if body is None:
            message.set_content(html, subtype="html")
        else:
            message.add_alternative(html, subtype="html")
    return message


def _docx(*paragraphs: tuple[int | None, str]) -> bytes:
    document = docx.Document()
    for level, text in paragraphs:
        if level is None:
            document.add_paragraph(text)
        else:
            document.add_heading(text, level=level)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


REPORT_DOCX = (
    (1, "年度报告"),
    (None, "收入增长了百分之十二。"),
    (2, "Costs"),
    (None, "Costs fell because hiring was paused."),
)


def _assert_headings_exact(document: ParsedDocument) -> None:
    for heading in document.headings:
        assert document.text[heading.start :].startswith(heading.title), heading
    assert [h.start for h in document.headings] == sorted(h.start for h in document.headings)


def _titles(document: ParsedDocument) -> list[tuple[int, str]]:
    return [(h.level, h.title) for h in document.headings]


# --- EML: headers and bodies ----------------------------------------------------------------------


def test_plain_mail_has_headers_as_metadata_and_as_text() -> None:
    document = parse_eml(_eml().as_bytes())

    assert document.file_type is FileType.EML
    assert document.title == "Quarterly budget 季度预算"
    assert _titles(document) == [(1, "Quarterly budget 季度预算")]
    assert document.headings[0].start == 0
    assert dict(document.metadata) == {
        "Subject": "Quarterly budget 季度预算",
        "From": "张三 <zhang.san@example.cn>",
        "To": "Alice <alice@example.com>, 李四 <li.si@example.cn>",
        "Cc": "Bob <bob@example.com>",
        "Date": "Mon, 01 Jun 2026 09:30:00 +0800",
    }
    assert document.text == (
        "Quarterly budget 季度预算\n\n"
        "From: 张三 <zhang.san@example.cn>\n"
        "To: Alice <alice@example.com>, 李四 <li.si@example.cn>\n"
        "Cc: Bob <bob@example.com>\n"
        "Date: Mon, 01 Jun 2026 09:30:00 +0800\n\n"
        "The budget is 1.2 million yuan.\n预算为 120 万元。"
    )


def test_the_dispatcher_reads_eml_through_this_parser() -> None:
    data = _eml().as_bytes()
    assert parse_document(data, FileType.EML) == parse_eml(data)


def test_html_only_mail_is_read_as_text_with_its_headings_below_the_subject() -> None:
    html = (
        "<html><head><style>p {color: red}</style></head><body>"
        "<h1>项目进展</h1><p>数据迁移<b>已完成</b>。</p><h2>Next steps</h2><p>Switch over on Friday.</p>"
        "</body></html>"
    )
    document = parse_eml(_eml(body=None, html=html).as_bytes())

    assert "<p>" not in document.text and "<b>" not in document.text and "color" not in document.text
    assert "数据迁移已完成。" in document.text
    assert _titles(document) == [(1, "Quarterly budget 季度预算"), (2, "项目进展"), (3, "Next steps")]
    _assert_headings_exact(document)


def test_alternative_bodies_are_read_once_preferring_plain_text() -> None:
    message = _eml(body="Plain version of the news.", html="<p>HTML version of the news.</p>")
    document = parse_eml(message.as_bytes())

    assert "Plain version of the news." in document.text
    assert "HTML version" not in document.text


def test_a_mail_with_nothing_in_it_is_a_parse_error() -> None:
    with pytest.raises(DocumentParseError, match=r"^the e-mail has no subject, sender, body or attachment$"):
        parse_document(b"\r\n", FileType.EML)


def test_mail_without_subject_still_has_a_heading() -> None:
    message = _eml()
    del message["Subject"]
    document = parse_eml(message.as_bytes())

    assert _titles(document) == [(1, "(no subject)")]
    assert "Subject" not in dict(document.metadata)


# --- EML: Chinese charsets ------------------------------------------------------------------------


def _legacy_mail(charset: str, subject: str, sender: str, body: str) -> bytes:
    """A mail as Chinese clients write it: encoded-word headers and a base64 body, all in ``charset``."""

    def word(text: str) -> str:
        return f"=?{charset}?B?{base64.b64encode(text.encode(_codec(charset))).decode()}?="

    encoded_body = base64.encodebytes(body.encode(_codec(charset))).decode()
    return (
        f"From: {word(sender)} <sender@example.cn>\r\n"
        "To: team@example.cn\r\n"
        f"Subject: {word(subject)}\r\n"
        "Date: Mon, 01 Jun 2026 09:30:00 +0800\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: text/plain; charset="{charset}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{encoded_body}"
    ).encode("ascii")


def _codec(charset: str) -> str:
    # What clients really write under these labels.
    return {"gb2312": "gbk", "big5": "cp950"}.get(charset, charset)


def test_gb2312_mail_with_gbk_characters_in_headers_and_body() -> None:
    # 镕 and 喆 are GBK characters outside GB2312, which clients still send labelled GB2312.
    data = _legacy_mail(
        "gb2312", "关于朱镕基讲话的学习安排", "王喆", "请各部门于周五前提交学习心得。\n谢谢！"
    )
    document = parse_eml(data)

    assert document.title == "关于朱镕基讲话的学习安排"
    assert dict(document.metadata)["From"] == "王喆 <sender@example.cn>"
    assert "From: 王喆 <sender@example.cn>" in document.text
    assert document.text.endswith("请各部门于周五前提交学习心得。\n谢谢！")


def test_big5_mail_is_decoded_by_its_declared_charset() -> None:
    data = _legacy_mail("big5", "會議紀錄：資料庫遷移", "陳大文", "遷移已於週三完成，請檢查報表。")
    document = parse_eml(data)

    assert document.title == "會議紀錄：資料庫遷移"
    assert "From: 陳大文 <sender@example.cn>" in document.text
    assert "遷移已於週三完成，請檢查報表。" in document.text


def test_raw_gbk_bytes_in_headers_and_an_undeclared_body_are_detected() -> None:
    data = (
        "From: 张三 <zhang@example.cn>\r\nSubject: 数据库连接失败的处理办法\r\n\r\n"
        "数据库连接失败时，请检查网络设置，并联系信息技术部门。\r\n"
    ).encode("gbk")
    document = parse_eml(data)

    assert document.title == "数据库连接失败的处理办法"
    assert "From: 张三 <zhang@example.cn>" in document.text
    assert "请检查网络设置" in document.text


# --- EML: attachments -----------------------------------------------------------------------------


def test_docx_attachment_is_a_section_with_its_headings_one_level_deeper() -> None:
    message = _eml()
    message.add_attachment(
        _docx(*REPORT_DOCX),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="年度报告.docx",
    )
    document = parse_eml(message.as_bytes())

    assert _titles(document) == [
        (1, "Quarterly budget 季度预算"),
        (2, "Attachment: 年度报告.docx"),
        (3, "年度报告"),
        (4, "Costs"),
    ]
    _assert_headings_exact(document)
    assert "收入增长了百分之十二。" in document.text
    # The mail's own metadata, not the attachment's.
    assert dict(document.metadata)["Subject"] == "Quarterly budget 季度预算"


def test_attachment_sections_reach_the_chunks() -> None:
    message = _eml()
    message.add_attachment(
        _docx(*REPORT_DOCX),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="report.docx",
    )
    document = parse_eml(message.as_bytes())
    chunks = split_document(document, count_tokens=len, chunk_tokens=400, overlap_tokens=0)

    costs = next(chunk for chunk in chunks if "hiring was paused" in chunk.text)
    assert costs.section == "Quarterly budget 季度预算 > Attachment: report.docx > 年度报告 > Costs"
    assert all(document.text[chunk.start : chunk.end] == chunk.text for chunk in chunks)


def test_text_attachment_in_a_declared_chinese_charset() -> None:
    message = _eml()
    message.add_attachment(
        "会议纪要\n\n下周一上午十点讨论预算。".encode("gbk"),
        maintype="text",
        subtype="plain",
        filename="纪要.txt",
        params={"charset": "gb2312"},
    )
    document = parse_eml(message.as_bytes())

    assert _titles(document)[1] == (2, "Attachment: 纪要.txt")
    assert document.text.endswith("Attachment: 纪要.txt\n\n会议纪要\n\n下周一上午十点讨论预算。")


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# Passes detection as DOCX (a ZIP with word/document.xml), then fails in python-docx.
BROKEN_DOCX = _zip({"word/document.xml": b"<w:document", "[Content_Types].xml": b"<Types"})


def test_unreadable_attachments_leave_a_note_and_the_mail_is_still_read() -> None:
    message = _eml()
    message.add_attachment(
        _zip({"a.txt": b"a"}), maintype="application", subtype="zip", filename="archive.zip"
    )
    message.add_attachment(
        BROKEN_DOCX, maintype="application", subtype="octet-stream", filename="broken.docx"
    )
    message.add_attachment(
        b"still readable", maintype="text", subtype="plain", filename="ok.txt", params={"charset": "utf-8"}
    )
    document = parse_eml(message.as_bytes())

    notes = [line for line in document.text.split("\n") if line.startswith("[attachment")]
    assert len(notes) == 2
    assert notes[0].startswith("[attachment archive.zip skipped: unsupported file type '.zip'")
    # The refusal's list of every extension we read is not text anyone asks about.
    assert "supported:" not in notes[0]
    assert notes[1].startswith(
        "[attachment broken.docx skipped: the Word (DOCX) file is damaged or not readable"
    )
    assert _titles(document)[-1] == (2, "Attachment: ok.txt")
    assert document.text.endswith("still readable")


def test_signature_parts_and_inline_images_are_not_attachments() -> None:
    message = _eml()
    message.add_related(b"\x89PNG\r\n\x1a\nlogo", maintype="image", subtype="png", cid="<logo@example.cn>")
    message.add_attachment(b"0\x82 signature", maintype="application", subtype="pkcs7-signature")
    document = parse_eml(message.as_bytes())

    assert _titles(document) == [(1, "Quarterly budget 季度预算")]
    assert "[" not in document.text


# --- EML: forwarded mails -------------------------------------------------------------------------


def _forwarding(inner: EmailMessage, subject: str = "Fwd: budget") -> EmailMessage:
    outer = _eml(subject=subject, body="请看下面转发的邮件。")
    outer.add_attachment(inner)
    return outer


def test_forwarded_mail_is_parsed_recursively_one_level_deeper() -> None:
    inner = _eml(subject="原始邮件：预算审批", body="预算已经批准。")
    inner.replace_header("From", "Finance <finance@example.cn>")
    inner.add_attachment(
        _docx(*REPORT_DOCX),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="report.docx",
    )
    document = parse_eml(_forwarding(inner).as_bytes())

    assert _titles(document) == [
        (1, "Fwd: budget"),
        (2, "Attachment: forwarded message"),
        (3, "原始邮件：预算审批"),
        (4, "Attachment: report.docx"),
        (5, "年度报告"),
        (6, "Costs"),
    ]
    _assert_headings_exact(document)
    # Who sent the forwarded mail is in the text; only the outer mail's headers are metadata.
    assert "From: Finance <finance@example.cn>" in document.text
    assert dict(document.metadata)["Subject"] == "Fwd: budget"


def test_an_attached_eml_file_is_walked_like_a_forwarded_mail() -> None:
    outer = _eml(subject="Fwd: file")
    outer.add_attachment(
        _eml(subject="附件邮件", body="内层正文").as_bytes(),
        maintype="application",
        subtype="octet-stream",
        filename="original.eml",
    )
    document = parse_eml(outer.as_bytes())

    assert _titles(document) == [(1, "Fwd: file"), (2, "Attachment: original.eml"), (3, "附件邮件")]
    assert document.text.endswith("内层正文")


def test_forwarded_mails_nested_past_the_depth_limit_are_noted() -> None:
    message = _eml(subject="level 0", body="body 0")
    for level in range(1, mail.MAX_DEPTH + 3):
        message = _forwarding(message, subject=f"level {level}")
    document = parse_eml(message.as_bytes())

    subjects = [title for _, title in _titles(document) if title.startswith("level ")]
    assert len(subjects) == mail.MAX_DEPTH + 1
    assert document.text.count("[attachment forwarded message skipped: forwarded mails nest more than") == 1


# --- EML: hostile structure, in the worker's subprocess with its default limits --------------------


def _nested_multiparts(levels: int) -> bytes:
    lines = [b"From: a@example.com\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"]
    lines += [
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(levels)
    ]
    lines.append(
        b'Content-Type: text/plain\r\nContent-Disposition: attachment; filename="x.txt"\r\n\r\nx\r\n'
    )
    lines += [b"--b%d--\r\n" % i for i in reversed(range(levels))]
    return b"".join(lines)


def test_ten_thousand_nested_attachments_are_refused_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(DocumentParseError, match=r"MIME part delimiters, over the limit of 10,000"):
        parse_in_subprocess(
            _nested_multiparts(10_000), FileType.EML, timeout_seconds=TIMEOUT_SECONDS, memory_mb=MEMORY_MB
        )
    assert time.monotonic() - started < 10


def test_ten_thousand_nested_forwarded_mails_are_refused_quickly() -> None:
    # No boundaries to count: message/rfc822 parts nest with nothing but a header line each.
    data = (
        b"From: a@example.com\r\nSubject: x\r\n"
        + b"Content-Type: message/rfc822\r\n\r\n" * 10_000
        + b"body\r\n"
    )
    started = time.monotonic()
    with pytest.raises(DocumentParseError, match=r"nests its parts too deeply"):
        parse_in_subprocess(data, FileType.EML, timeout_seconds=TIMEOUT_SECONDS, memory_mb=MEMORY_MB)
    assert time.monotonic() - started < 10


def test_a_mail_with_too_many_attachments_is_read_up_to_the_part_limit() -> None:
    parts = [b"From: a@example.com\r\nSubject: many\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"]
    parts += [
        b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b'Content-Disposition: attachment; filename="a%d.txt"\r\n\r\n' % index + f"附件 {index}\r\n".encode()
        for index in range(1_200)
    ]
    parts.append(b"--B--\r\n")
    started = time.monotonic()
    document = parse_in_subprocess(
        b"".join(parts), FileType.EML, timeout_seconds=TIMEOUT_SECONDS, memory_mb=MEMORY_MB
    )
    assert time.monotonic() - started < 30

    attachments = [title for _, title in _titles(document) if title.startswith("Attachment: ")]
    # The mail itself, a multipart/mixed, is a part too.
    assert attachments == [f"Attachment: a{index}.txt" for index in range(mail.MAX_PARTS - 1)]
    assert "附件 998" in document.text
    assert document.text.endswith(
        f"[the rest of this mail was skipped: it has more than {mail.MAX_PARTS:,} parts]"
    )


def test_attachments_past_the_byte_budget_are_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mail, "MAX_ATTACHMENT_BYTES", 1000)
    message = _eml()
    for name in ("first.txt", "second.txt"):
        message.add_attachment(b"x" * 600, maintype="text", subtype="plain", filename=name)
    document = parse_eml(message.as_bytes())

    assert "Attachment: first.txt" in document.text
    assert "[attachment second.txt skipped: the mail's attachments add up to more than" in document.text


# --- MSG ------------------------------------------------------------------------------------------
#
# [MS-OXMSG]: each property is a 16-byte entry in a __properties_version1.0 stream (tag, flags, value or
# size); strings and binaries are streams of their own named __substg1.0_<tag>. Recipients and attachments
# are storages; an embedded mail is a storage inside its attachment's.

_PT_LONG, _PT_TIME, _PT_UNICODE, _PT_BINARY, _PT_OBJECT = 0x0003, 0x0040, 0x001F, 0x0102, 0x000D
_RECIPIENT_TO, _RECIPIENT_CC = 1, 2
_ATTACH_BY_VALUE, _ATTACH_EMBEDDED_MSG = 1, 5


@dataclass
class OutlookMail:
    subject: str
    sender: tuple[str, str]
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    body: str | None = None
    html: bytes | None = None
    sent: datetime.datetime | None = None
    files: list[tuple[str, bytes]] = field(default_factory=list)
    forwarded: list[OutlookMail] = field(default_factory=list)
    message_class: str = "IPM.Note"


class _MsgWriter:
    def __init__(self) -> None:
        self.ole = OleWriter()

    def message(self, mail_item: OutlookMail, storage: list[str]) -> None:
        properties = [self._fixed(0x0E07, _PT_LONG, struct.pack("<I4x", 1))]  # message flags: read, sent
        properties.append(self._string(storage, 0x001A, mail_item.message_class))
        properties.append(self._string(storage, 0x0037, mail_item.subject))
        properties.append(self._string(storage, 0x0C1A, mail_item.sender[0]))
        properties.append(self._string(storage, 0x5D01, mail_item.sender[1]))
        if mail_item.body is not None:
            properties.append(self._string(storage, 0x1000, mail_item.body))
        if mail_item.html is not None:
            properties.append(self._binary(storage, 0x1013, mail_item.html))
        if mail_item.sent is not None:
            properties.append(self._fixed(0x0039, _PT_TIME, struct.pack("<Q", _filetime(mail_item.sent))))
        recipients = [(_RECIPIENT_TO, r) for r in mail_item.to] + [(_RECIPIENT_CC, r) for r in mail_item.cc]
        for index, (kind, (name, address)) in enumerate(recipients):
            recipient = [*storage, f"__recip_version1.0_#{index:08X}"]
            self.ole.addEntry(recipient, storage=True)
            entries = [
                self._fixed(0x0C15, _PT_LONG, struct.pack("<I4x", kind)),
                self._string(recipient, 0x3001, name),
                self._string(recipient, 0x39FE, address),
            ]
            self.ole.addEntry([*recipient, "__properties_version1.0"], bytes(8) + b"".join(entries))
        attachments = 0
        for name, data in mail_item.files:
            attachment = self._attachment_storage(storage, attachments)
            entries = [
                self._fixed(0x3705, _PT_LONG, struct.pack("<I4x", _ATTACH_BY_VALUE)),
                self._string(attachment, 0x3707, name),
                self._binary(attachment, 0x3701, data),
            ]
            self.ole.addEntry([*attachment, "__properties_version1.0"], bytes(8) + b"".join(entries))
            attachments += 1
        for inner in mail_item.forwarded:
            attachment = self._attachment_storage(storage, attachments)
            entries = [
                self._fixed(0x3705, _PT_LONG, struct.pack("<I4x", _ATTACH_EMBEDDED_MSG)),
                self._string(attachment, 0x3001, inner.subject),
                self._fixed(0x3701, _PT_OBJECT, struct.pack("<I4x", 0xFFFFFFFF)),
            ]
            self.ole.addEntry([*attachment, "__properties_version1.0"], bytes(8) + b"".join(entries))
            embedded = [*attachment, "__substg1.0_3701000D"]
            self.ole.addEntry(embedded, storage=True)
            self.message(inner, embedded)
            attachments += 1
        # Recipient and attachment counts; the top-level header has 8 more reserved bytes than an embedded one.
        header = struct.pack("<8x4I", len(recipients), attachments, len(recipients), attachments)
        header += b"" if storage else bytes(8)
        self.ole.addEntry([*storage, "__properties_version1.0"], header + b"".join(properties))

    def _attachment_storage(self, storage: list[str], index: int) -> list[str]:
        attachment = [*storage, f"__attach_version1.0_#{index:08X}"]
        self.ole.addEntry(attachment, storage=True)
        return attachment

    def _string(self, storage: list[str], prop_id: int, text: str) -> bytes:
        data = text.encode("utf-16-le")
        self.ole.addEntry([*storage, f"__substg1.0_{prop_id:04X}{_PT_UNICODE:04X}"], data)
        return self._fixed(prop_id, _PT_UNICODE, struct.pack("<II", len(data) + 2, 0))

    def _binary(self, storage: list[str], prop_id: int, data: bytes) -> bytes:
        self.ole.addEntry([*storage, f"__substg1.0_{prop_id:04X}{_PT_BINARY:04X}"], data)
        return self._fixed(prop_id, _PT_BINARY, struct.pack("<II", len(data), 0))

    @staticmethod
    def _fixed(prop_id: int, prop_type: int, value: bytes) -> bytes:
        # Flags 6: readable and writable.
        return struct.pack("<II", (prop_id << 16) | prop_type, 6) + value


def _filetime(moment: datetime.datetime) -> int:
    """100-nanosecond intervals since 1601-01-01 UTC."""
    epoch = datetime.datetime(1601, 1, 1, tzinfo=datetime.UTC)
    return (moment - epoch) // datetime.timedelta(microseconds=1) * 10


def _msg(mail_item: OutlookMail) -> bytes:
    writer = _MsgWriter()
    writer.ole.addEntry(["__nameid_version1.0"], storage=True)
    for stream in ("00020102", "00030102", "00040102"):  # named-property GUIDs, entries and names: none
        writer.ole.addEntry(["__nameid_version1.0", f"__substg1.0_{stream}"], b"")
    writer.message(mail_item, [])
    buffer = io.BytesIO()
    writer.ole.write(buffer)
    return buffer.getvalue()


def _weekly_report() -> OutlookMail:
    return OutlookMail(
        subject="项目周报 Weekly report",
        sender=("张三", "zhang.san@example.cn"),
        to=[("Alice", "alice@example.com"), ("李四", "li.si@example.cn")],
        cc=[("Bob", "bob@example.com")],
        body="本周完成了数据迁移。\r\nThe migration is done.",
        sent=SENT,
    )


def test_generated_msg_is_detected_as_outlook_mail() -> None:
    assert detect_file_type("周报.msg", _msg(_weekly_report())) is FileType.MSG


def test_msg_headers_are_metadata_and_text() -> None:
    document = parse_msg(_msg(_weekly_report()))

    assert document.file_type is FileType.MSG
    assert document.title == "项目周报 Weekly report"
    assert dict(document.metadata) == {
        "Subject": "项目周报 Weekly report",
        "From": "张三 <zhang.san@example.cn>",
        "To": "Alice <alice@example.com>; 李四 <li.si@example.cn>",
        "Cc": "Bob <bob@example.com>",
        "Date": "Mon, 01 Jun 2026 01:30:00 +0000",
    }
    assert document.text == (
        "项目周报 Weekly report\n\n"
        "From: 张三 <zhang.san@example.cn>\n"
        "To: Alice <alice@example.com>; 李四 <li.si@example.cn>\n"
        "Cc: Bob <bob@example.com>\n"
        "Date: Mon, 01 Jun 2026 01:30:00 +0000\n\n"
        "本周完成了数据迁移。\nThe migration is done."
    )
    assert _titles(document) == [(1, "项目周报 Weekly report")]
    assert parse_document(_msg(_weekly_report()), FileType.MSG) == document


def test_msg_html_body_is_used_when_there_is_no_plain_body() -> None:
    item = _weekly_report()
    item.body = None
    item.html = "<html><body><h1>进展</h1><p>迁移<b>已完成</b>。</p></body></html>".encode()
    document = parse_msg(_msg(item))

    assert "迁移已完成。" in document.text and "<b>" not in document.text
    assert _titles(document) == [(1, "项目周报 Weekly report"), (2, "进展")]
    _assert_headings_exact(document)


def test_msg_attachments_and_embedded_mails_are_parsed_in_turn() -> None:
    item = _weekly_report()
    item.files = [
        ("年度报告.docx", _docx(*REPORT_DOCX)),
        ("broken.docx", BROKEN_DOCX),
    ]
    item.forwarded = [
        OutlookMail(
            subject="转发：预算审批",
            sender=("Finance", "finance@example.cn"),
            body="预算已经批准。",
            files=[("纪要.txt", "下周一讨论预算。".encode("gbk"))],
        )
    ]
    document = parse_msg(_msg(item))

    assert _titles(document) == [
        (1, "项目周报 Weekly report"),
        (2, "Attachment: 年度报告.docx"),
        (3, "年度报告"),
        (4, "Costs"),
        (2, "Attachment: 转发：预算审批.msg"),
        (3, "转发：预算审批"),
        (4, "Attachment: 纪要.txt"),
    ]
    _assert_headings_exact(document)
    assert "[attachment broken.docx skipped: the Word (DOCX) file is damaged or not readable" in document.text
    assert "From: Finance <finance@example.cn>" in document.text
    assert document.text.endswith("下周一讨论预算。")


def test_an_eml_attached_to_an_msg_is_walked_as_a_forwarded_mail() -> None:
    item = _weekly_report()
    item.files = [("original.eml", _eml(subject="附件邮件", body="内层正文").as_bytes())]
    document = parse_msg(_msg(item))

    assert _titles(document)[1:] == [(2, "Attachment: original.eml"), (3, "附件邮件")]
    assert document.text.endswith("内层正文")


def test_embedded_msgs_nested_past_the_depth_limit_are_noted() -> None:
    item = OutlookMail(subject="level 0", sender=("A", "a@example.com"), body="body 0")
    for level in range(1, mail.MAX_DEPTH + 3):
        item = OutlookMail(
            subject=f"level {level}", sender=("A", "a@example.com"), body="...", forwarded=[item]
        )
    started = time.monotonic()
    document = parse_in_subprocess(
        _msg(item), FileType.MSG, timeout_seconds=TIMEOUT_SECONDS, memory_mb=MEMORY_MB
    )
    assert time.monotonic() - started < 10

    subjects = [title for _, title in _titles(document) if title.startswith("level ")]
    assert len(subjects) == mail.MAX_DEPTH + 1
    assert "forwarded mails nest more than 5 levels deep]" in document.text


def test_msg_attachments_past_the_part_limit_are_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mail, "MAX_PARTS", 2)
    item = _weekly_report()
    item.files = [(f"{index}.txt", f"第 {index} 个附件".encode()) for index in range(4)]
    document = parse_msg(_msg(item))

    assert [title for _, title in _titles(document)][1:] == ["Attachment: 0.txt", "Attachment: 1.txt"]
    assert document.text.endswith("[the rest of this mail was skipped: it has more than 2 parts]")


def test_msg_parsing_reads_only_the_given_bytes_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # olefile takes bytes shorter than 1,536 for a file name; an upload must never be able to name a file.
    real = tmp_path / "real.msg"
    real.write_bytes(_msg(_weekly_report()))
    with pytest.raises(DocumentParseError):
        parse_document(str(real).encode(), FileType.MSG)

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    item = _weekly_report()
    item.files = [("report.docx", _docx(*REPORT_DOCX))]
    item.forwarded = [OutlookMail(subject="inner", sender=("A", "a@example.com"), body="inner body")]
    parse_msg(_msg(item))
    assert list(work.iterdir()) == []


def test_an_outlook_item_that_is_not_a_mail_is_refused_by_name() -> None:
    item = _weekly_report()
    item.message_class = "IPM"
    with pytest.raises(DocumentParseError, match=r"item of class IPM, not a mail"):
        parse_document(_msg(item), FileType.MSG)


def test_damaged_msg_is_a_parse_error() -> None:
    data = _msg(_weekly_report())
    with pytest.raises(DocumentParseError, match=r"Outlook mail \(MSG\) file is damaged or not readable"):
        parse_document(data[:2048], FileType.MSG)
