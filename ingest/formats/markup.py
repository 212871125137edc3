"""Markup formats: MDX, AsciiDoc and Org, whose source is the document text, and LaTeX, whose text is rendered.

MDX, AsciiDoc and Org read well as written, so, as with Markdown and reStructuredText, the decoded source is
the document text: offsets are exact and code blocks stay as written. Only the headings are found here.

LaTeX source does not read well as a quote (``\\textbf{}``, ``\\cite{}``, ``\\label{}``, comments, a preamble
of ``\\usepackage`` lines), and prose is what retrieval matches best, so its text is pylatexenc's plain-text
rendering of the document body, built section by section so that each heading's offset is known.

``ingest.parsing`` imports this module to build its table of parsers, so its helpers are imported inside the
functions that use them.
"""

from __future__ import annotations

import bisect
import functools
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import orgparse
import yaml
from pylatexenc import latex2text, latexwalker, macrospec

from app.rag.types import FileType, Heading, ParsedDocument
from ingest.formats.builder import DocumentBuilder, one_line
from ingest.parsing import decode_text, front_matter_end, line_offsets, markdown_headings, title_from_text

logger = logging.getLogger(__name__)

# As Markdown and the document builder have them.
_MAX_LEVEL = 6
_MAX_TITLE_CHARS = 200


# --- MDX ------------------------------------------------------------------------------------------

_MDX_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
# ESM (``import``/``export`` statements) starts a block at the left margin and runs to the next blank line.
_MDX_ESM = re.compile(r"(?:import|export)(?:[ \t{*]|$)")
# A JSX tag, fragment or closing tag, or a JavaScript expression such as the {/* comment */} that MDX has
# instead of HTML comments.
_MDX_JSX = re.compile(r"[ \t]*(?:<[A-Za-z/>]|\{)")
# What a title may carry besides its words: JSX tags (a <Badge>) and a Docusaurus heading id ({#install}).
_MDX_TITLE_MARKUP = re.compile(r"</?[A-Za-z][^<>]*>|\{#[\w-]+\}")


def parse_mdx(data: bytes) -> ParsedDocument:
    text = decode_text(data)
    prose = _blank_mdx_code(text)
    headings = tuple(
        Heading(heading.start, heading.level, words)
        for heading in markdown_headings(prose, markdown=True)
        if (words := one_line(_MDX_TITLE_MARKUP.sub(" ", heading.title)))
    )
    title = _front_matter_title(text) or title_from_text(prose, headings, markdown=True)
    return ParsedDocument(text, FileType.MDX, title, headings)


def _blank_mdx_code(text: str) -> str:
    """The text with its ESM and JSX lines made blank, so that only the Markdown in it can make headings.

    A ``# comment`` inside a template literal or a commented-out ``{/* ## Old section */}`` is JavaScript,
    not a heading. Every character keeps its offset: a blanked line keeps its length and its newline.
    """
    lines = text.split("\n")
    index = front_matter_end(lines)
    fence: tuple[str, int] | None = None  # the open fence's character and length
    block_start = True
    while index < len(lines):
        line = lines[index]
        fence_match = _MDX_FENCE.fullmatch(line)
        end = index + 1
        code = False
        if fence is not None:
            if fence_match and _closes_fence(fence, fence_match):
                fence = None
        elif fence_match and not (fence_match.group(1)[0] == "`" and "`" in fence_match.group(2)):
            fence = (fence_match.group(1)[0], len(fence_match.group(1)))
        elif block_start and _MDX_ESM.match(line):
            end = next((i for i in range(index, len(lines)) if not lines[i].strip()), len(lines))
            code = True
        elif _MDX_JSX.match(line):
            end = _balanced_end(lines, index)
            code = True
        if code:
            lines[index:end] = [" " * len(blanked) for blanked in lines[index:end]]
        block_start = not line.strip()
        index = end
    return "\n".join(lines)


def _closes_fence(fence: tuple[str, int], match: re.Match[str]) -> bool:
    marker = match.group(1)
    return marker[0] == fence[0] and len(marker) >= fence[1] and not match.group(2).strip()


def _balanced_end(lines: list[str], start: int) -> int:
    """The index after the line where the braces opened from ``start`` on are closed again.

    Braces are counted as written, strings and comments included: MDX refuses an expression that does not
    close, so in a file that compiles the count comes out right except in rare string contents.
    """
    depth = 0
    for index in range(start, len(lines)):
        depth += lines[index].count("{") - lines[index].count("}")
        if depth <= 0:
            return index + 1
    return len(lines)


def _front_matter_title(text: str) -> str:
    """The ``title:`` of YAML front matter, which MDX sites (Docusaurus, Nextra) show as the page title."""
    lines = text.split("\n")
    end = front_matter_end(lines)
    if not end:
        return ""
    try:
        fields = yaml.safe_load("\n".join(lines[1 : end - 1]))
    # Broken front matter costs the document its title, not its text.
    except yaml.YAMLError:
        return ""
    title = fields.get("title") if isinstance(fields, dict) else None
    return one_line(title) if isinstance(title, str) else ""


# --- AsciiDoc -------------------------------------------------------------------------------------

# A section title on one line: = Document title, == Section … ====== (and the Markdown-style # variant that
# Asciidoctor also accepts), optionally closed by the same markers (stripped by _adoc_title: a lazy group
# before an optional closing one takes quadratic time on a long line of spaces).
_ADOC_TITLE = re.compile(r"(={1,6}|#{1,6})[ \t]+(\S.*)")
# A two-line (underlined) title, as AsciiDoc.py wrote them and Asciidoctor still reads them.
_ADOC_UNDERLINE = re.compile(r"(=+|-+|~+|\^+|\++)[ \t]*")
_ADOC_UNDERLINE_LEVELS = {"=": 1, "-": 2, "~": 3, "^": 4, "+": 5}
# Delimited blocks. In verbatim ones (comment, listing, literal, passthrough, table, fenced code) only the
# closing line counts; the others (example, sidebar, quote, open) can hold nested blocks. No section starts
# inside either kind.
_ADOC_VERBATIM_DELIMITER = re.compile(r"/{4,}|-{4,}|\.{4,}|\+{4,}|[|,:!]={3,}|(`{3,})(?:[\w+-]*)")
_ADOC_COMPOUND_DELIMITER = re.compile(r"={4,}|\*{4,}|_{4,}|--")
# Lines that may stand between a blank line and the section title they belong to: block attributes and
# anchors, comments, attribute entries and block titles.
_ADOC_PREFIX_LINE = re.compile(r"\[.*\]|//(?!//).*|:!?[\w-]+!?:.*|\.[^.\s].*")


@dataclass(frozen=True)
class _Delimiter:
    closer: str
    verbatim: bool


def parse_asciidoc(data: bytes) -> ParsedDocument:
    """AsciiDoc's sections, found by a line scan of the source.

    The ``asciidoc`` package (AsciiDoc.py) is no parser to ask: it only renders HTML or DocBook, through
    module-global state, in unsafe mode unless told otherwise (``sys::`` runs commands, ``include::`` reads
    files), without source positions and without Asciidoctor's ``#`` titles. The one Python parser with a
    tree and positions (asciidoctrine) is an alpha release and took 31 s for an 11 kB document.
    """
    text = decode_text(data)
    headings = _asciidoc_headings(text)
    title = ""
    # The document title (level 0) is the header's first line, not a section: sections sit beside it.
    if headings and headings[0].level == 1 and not _has_content_before(text, headings[0].start):
        title, headings = headings[0].title, headings[1:]
    elif headings:
        title = headings[0].title
    return ParsedDocument(text, FileType.ASCIIDOC, title[:_MAX_TITLE_CHARS], tuple(headings))


def _asciidoc_headings(text: str) -> list[Heading]:
    lines = text.split("\n")
    offsets = line_offsets(lines)
    headings: list[Heading] = []
    blocks: list[_Delimiter] = []
    block_start = True
    index = 0
    while index < len(lines):
        line = lines[index].rstrip()
        index += 1
        if blocks and line == blocks[-1].closer:
            blocks.pop()
            block_start = True
            continue
        if blocks and blocks[-1].verbatim:
            continue
        if verbatim := _ADOC_VERBATIM_DELIMITER.fullmatch(line):
            blocks.append(_Delimiter(verbatim.group(1) or line, verbatim=True))
            block_start = True
            continue
        if _ADOC_COMPOUND_DELIMITER.fullmatch(line):
            blocks.append(_Delimiter(line, verbatim=False))
            block_start = True
            continue
        if not line.strip():
            block_start = True
            continue
        if _ADOC_PREFIX_LINE.fullmatch(line):
            continue
        if block_start and not blocks:
            level_title = _adoc_title(line, lines[index].rstrip() if index < len(lines) else "")
            if level_title is not None:
                level, title, underlined = level_title
                headings.append(Heading(offsets[index - 1], level, title))
                index += underlined
                continue
        block_start = False
    return headings


def _adoc_title(line: str, next_line: str) -> tuple[int, str, int] | None:
    """A title's level, its text and how many underline lines follow it, if ``line`` starts a title."""
    if one_line_title := _ADOC_TITLE.fullmatch(line):
        markers, words = one_line_title.groups()
        closed = words.removesuffix(markers)
        if closed != words and closed[-1:] in (" ", "\t"):
            words = closed
        return len(markers), one_line(words), 0
    underline = _ADOC_UNDERLINE.fullmatch(next_line)
    title = line.strip()
    if underline is None or title.startswith(".") or not any(char.isalnum() for char in title):
        return None
    # Asciidoctor takes an underline within one character of the title's length; editors line it up with
    # the title's display width, in which a Chinese character is two columns.
    length = len(underline.group(1))
    if min(abs(len(title) - length), abs(_display_width(title) - length)) > 1:
        return None
    return _ADOC_UNDERLINE_LEVELS[underline.group(1)[0]], one_line(title), 1


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _has_content_before(text: str, position: int) -> bool:
    """Whether anything but blank lines, comments and attribute entries comes before ``position``."""
    return any(
        line.strip() and not _ADOC_PREFIX_LINE.fullmatch(line.rstrip())
        for line in text[:position].split("\n")
    )


# --- Org ------------------------------------------------------------------------------------------

_ORG_BLOCK_BEGIN = re.compile(r"[ \t]*#\+begin_(\S+).*", re.IGNORECASE)
_ORG_BLOCK_END = re.compile(r"[ \t]*#\+end_(\S+)[ \t]*", re.IGNORECASE)


def parse_org(data: bytes) -> ParsedDocument:
    """Org's outline as orgparse reads it, with the lines of ``#+BEGIN_…`` blocks hidden from it.

    orgparse takes every line that starts with stars for a heading, even inside a source block, where a
    shell script's ``** note`` or a diff's ``*** file`` is code.
    """
    text = decode_text(data)
    lines = text.split("\n")
    offsets = line_offsets(lines)
    # loadi, not loads: loads splits on str.splitlines() boundaries (form feeds, U+2028…), which would
    # shift every line number after one of them.
    root = orgparse.loadi(_blank_org_blocks(lines))
    headings = []
    for node in root[1:]:
        title = one_line(node.heading)
        if title:
            headings.append(Heading(offsets[node.linenumber - 1], min(node.level, _MAX_LEVEL), title))
    title = one_line(" ".join(root.get_file_property_list("TITLE")))
    if not title and headings:
        title = headings[0].title
    return ParsedDocument(text, FileType.ORG, title[:_MAX_TITLE_CHARS], tuple(headings))


def _blank_org_blocks(lines: list[str]) -> list[str]:
    """The lines with those inside a closed ``#+BEGIN_X … #+END_X`` block made empty.

    A begin line without its end line opens no block in Org: it is an ordinary line.
    """
    ends: dict[str, list[int]] = {}
    for index, line in enumerate(lines):
        if end_line := _ORG_BLOCK_END.fullmatch(line):
            ends.setdefault(end_line.group(1).lower(), []).append(index)
    visible = list(lines)
    index = 0
    while index < len(lines):
        begin = _ORG_BLOCK_BEGIN.fullmatch(lines[index])
        candidates = ends.get(begin.group(1).lower(), []) if begin else []
        after = bisect.bisect_right(candidates, index)
        if after < len(candidates):
            end = candidates[after]
            visible[index + 1 : end] = [""] * (end - index - 1)
            index = end
        index += 1
    return visible


# --- LaTeX ----------------------------------------------------------------------------------------

_SECTION_RANKS = {"part": 0, "chapter": 1, "section": 2, "subsection": 3, "subsubsection": 4}
# Environments whose content is code or prose kept as typed (rendered as written) or a comment (dropped),
# with the option arguments each takes before its content.
_VERBATIM_ENVIRONMENTS = {"verbatim": "", "Verbatim": "[", "lstlisting": "[", "minted": "[{", "comment": ""}
_DROPPED_ENVIRONMENTS = frozenset({"comment"})


def parse_latex(data: bytes) -> ParsedDocument:
    """LaTeX as the plain text of its body, with ``\\part`` … ``\\subsubsection`` (starred too) as headings.

    Levels are relative: the highest sectioning command the document uses is level 1. Nothing is read
    from disk (``\\input`` and ``\\include`` are dropped). Nesting deeper than Python's recursion limit
    raises ``RecursionError``, which ``parse_document`` reports as a file nested too deeply.
    """
    text = decode_text(data)
    walker = latexwalker.LatexWalker(text, latex_context=_walker_context(), tolerant_parsing=True)
    nodes, _, _ = walker.get_latex_nodes()
    renderer = _PlainTextRenderer(latex_context=_text_context(), math_mode="verbatim")
    document = next((node for node in nodes if _is_environment(node, "document")), None)
    body = document.nodelist if document is not None else nodes
    front = _LatexFront(renderer, nodes if document is None else [*nodes, *body])

    parts: list[str | tuple[int, str]] = []
    _collect_latex_parts(body, renderer, front, parts)
    top = min((part[0] for part in parts if isinstance(part, tuple)), default=0)
    builder = DocumentBuilder(FileType.LATEX)
    for part in parts:
        if isinstance(part, tuple):
            builder.heading(part[0] - top + 1, part[1])
        else:
            builder.block(part)
    return builder.build(front.title)


class _LatexFront:
    """What ``\\maketitle`` typesets: the ``\\title``, ``\\author`` and ``\\date`` given before it."""

    def __init__(self, renderer: _PlainTextRenderer, nodes: list[Any]) -> None:
        self._values: dict[str, str] = {}
        for node in nodes:
            name = _macro_name(node)
            if name in ("title", "author", "date") and name not in self._values:
                self._values[name] = _last_argument_text(node, renderer)

    @property
    def title(self) -> str:
        return self._values.get("title", "")

    def blocks(self) -> list[str]:
        return [self.title, self._values.get("author", ""), self._values.get("date", "")]


def _collect_latex_parts(
    nodes: list[Any], renderer: _PlainTextRenderer, front: _LatexFront, parts: list[str | tuple[int, str]]
) -> None:
    """Append to ``parts`` the rendered text between headings and, for each heading, its rank and title."""
    pending: list[Any] = []

    def flush() -> None:
        if pending:
            parts.append(renderer.nodelist_to_text(pending))
            pending.clear()

    for node in nodes:
        name = _macro_name(node)
        if name in _SECTION_RANKS:
            flush()
            title = one_line(_last_argument_text(node, renderer))
            if title:
                parts.append((_SECTION_RANKS[name], title))
        elif name == "maketitle":
            flush()
            parts.extend(front.blocks())
        elif _holds_sections(node):
            # An environment around the whole body (CJK, a class's own frame): its sections are the document's.
            flush()
            _collect_latex_parts(node.nodelist, renderer, front, parts)
        else:
            pending.append(node)
    flush()


def _macro_name(node: Any) -> str | None:
    return node.macroname if node.isNodeType(latexwalker.LatexMacroNode) else None


def _is_environment(node: Any, name: str) -> bool:
    return bool(node.isNodeType(latexwalker.LatexEnvironmentNode) and node.environmentname == name)


def _holds_sections(node: Any) -> bool:
    if not node.isNodeType((latexwalker.LatexEnvironmentNode, latexwalker.LatexGroupNode)):
        return False
    if node.isNodeType(latexwalker.LatexEnvironmentNode) and node.environmentname in _VERBATIM_ENVIRONMENTS:
        return False
    return any(_macro_name(child) in _SECTION_RANKS for child in node.nodelist or ())


def _last_argument_text(node: Any, renderer: _PlainTextRenderer) -> str:
    """The text of a macro's last argument: the long title of ``\\section[short]{long}``."""
    arguments = [argument for argument in (node.nodeargd.argnlist if node.nodeargd else ()) if argument]
    return str(renderer.nodelist_to_text(arguments[-1:])).strip()


class _PlainTextRenderer(latex2text.LatexNodes2Text):  # type: ignore[misc]  # pylatexenc has no type hints
    """pylatexenc's renderer, keeping as written any construct that its own rules fail on.

    Some of its rules index arguments its walker never parsed (``\\title`` or ``\\input`` with none, say); one
    such construct should cost its own rendering, not the document.
    """

    def node_to_text(self, node: Any, prev_node_hint: Any = None, textcol: int = 0) -> str:
        try:
            return str(super().node_to_text(node, prev_node_hint=prev_node_hint, textcol=textcol))
        except (LookupError, AttributeError, TypeError, ValueError):
            logger.debug("pylatexenc could not render a %s; kept as written", type(node).__name__)
            return str(node.latex_verbatim())


class _VerbatimEnvironmentArguments(macrospec.MacroStandardArgsParser):  # type: ignore[misc]
    """Reads an environment's options, then its content as written up to its ``\\end``.

    pylatexenc's own verbatim parser knows only ``verbatim``: without this, a ``\\section`` in a listing
    would be a heading and its braces would be parsed as groups.
    """

    def __init__(self, environment: str, options: str) -> None:
        super().__init__(argspec=options)
        self._end = rf"\end{{{environment}}}"

    def parse_args(self, w: Any, pos: int, parsing_state: Any = None) -> tuple[Any, int, int]:
        _, options_pos, options_len = super().parse_args(w, pos, parsing_state=parsing_state)
        start = options_pos + options_len
        end = w.s.find(self._end, start)
        if end == -1:
            # LaTeX itself reads an unclosed listing to the end of the file; so do we, rather than drop it.
            end = len(w.s)
        content = w.make_node(
            latexwalker.LatexCharsNode,
            parsing_state=parsing_state,
            chars=w.s[start:end],
            pos=start,
            len=end - start,
        )
        return macrospec.ParsedVerbatimArgs(verbatim_chars_node=content), pos, end - pos


@functools.cache
def _walker_context() -> Any:
    context = latexwalker.get_default_latex_context_db()
    context.add_context_category(
        "wenda",
        # The renderer's rule for \href reads two arguments, which the walker's default context never parses.
        macros=[macrospec.MacroSpec("href", "{{")],
        environments=[
            # The CJK package's environment around a Chinese body: its encoding and font are no text.
            *(macrospec.EnvironmentSpec(name, "{{") for name in ("CJK", "CJK*")),
            *(
                macrospec.EnvironmentSpec(name, args_parser=_VerbatimEnvironmentArguments(name, options))
                for name, options in _VERBATIM_ENVIRONMENTS.items()
            ),
        ],
        prepend=True,
    )
    return context


@functools.cache
def _text_context() -> Any:
    context = latex2text.get_default_latex_context_db()
    context.add_context_category(
        "wenda",
        macros=[
            latex2text.MacroTextSpec("verb", simplify_repl=_verbatim_text),
            # The renderer's \today is the day of the parse, which is no date of the document.
            latex2text.MacroTextSpec("today", ""),
            # The walker parses these macros' arguments and the renderer drops the arguments of any macro it
            # has no rule for: \texttt{wenda.toml} would vanish.
            *(
                latex2text.MacroTextSpec(name, discard=False)
                for name in ("texttt", "textsf", "textup", "textmd", "mbox")
            ),
            *(
                latex2text.MacroTextSpec(logo, logo)
                for logo in ("TeX", "LaTeX", "LaTeXe", "XeTeX", "XeLaTeX")
            ),
        ],
        environments=[
            latex2text.EnvironmentTextSpec(
                name, simplify_repl="" if name in _DROPPED_ENVIRONMENTS else _verbatim_text, discard=False
            )
            for name in _VERBATIM_ENVIRONMENTS
        ],
        prepend=True,
    )
    return context


def _verbatim_text(node: Any, l2tobj: Any) -> str:
    return str(node.nodeargd.verbatim_text) if node.nodeargd else ""
