"""MDX, AsciiDoc, Org and LaTeX: headings at exact offsets, titles, code that makes no headings, sections.

Every input is written here, in the test, as the format's authors write it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app.rag.errors import DocumentParseError
from app.rag.types import FileType, ParsedDocument
from ingest.chunking import split_document
from ingest.parse_limits import parse_in_subprocess
from ingest.parsing import parse_document


def _section_of(document: ParsedDocument, fact: str) -> str:
    """The section path of the chunk that holds ``fact``, chunked by characters."""
    chunks = split_document(document, count_tokens=len, chunk_tokens=400, overlap_tokens=0)
    for chunk in chunks:
        assert chunk.text == document.text[chunk.start : chunk.end]
    return next(chunk.section for chunk in chunks if fact in chunk.text)


def _outline(document: ParsedDocument) -> list[tuple[int, str]]:
    return [(heading.level, heading.title) for heading in document.headings]


# --- MDX ------------------------------------------------------------------------------------------

MDX = """---
title: 部署指南
sidebar_position: 2
---
import Tabs from '@theme/Tabs';
import TabItem from '@theme/TabItem';

export const meta = {
  example: `
# a template literal, not a heading
`,
};

# Wenda 部署

Wenda is a self-hosted document QA service. 本指南介绍部署步骤。

{/*
## 旧的安装方法 (commented out)
*/}

## 安装 {#install}

<Tabs>
  <TabItem value="linux" label="Linux">

### Linux <Badge>推荐</Badge>

在 Linux 上，服务默认监听端口 8443，唯一事实：钥匙在蓝色抽屉里。

```bash
# install the package
apt install wenda
```

  </TabItem>
</Tabs>

<CodeBlock code={`
# also a shell comment
wenda serve
`} />

## Configuration

Settings live in `wenda.toml`.
"""


def test_mdx_headings_title_and_sections() -> None:
    document = parse_document(MDX.encode(), FileType.MDX)
    assert document.file_type is FileType.MDX
    assert document.text == MDX  # the source is the text: offsets and code blocks exact
    assert document.title == "部署指南"  # the front matter's title
    # A title keeps the words of its JSX (the badge reads "推荐") and loses a Docusaurus heading id.
    assert _outline(document) == [(1, "Wenda 部署"), (2, "安装"), (3, "Linux 推荐"), (2, "Configuration")]
    sources = [
        "# Wenda 部署\n",
        "## 安装 {#install}\n",
        "### Linux <Badge>推荐</Badge>\n",
        "## Configuration\n",
    ]
    for heading, source in zip(document.headings, sources, strict=True):
        assert document.text[heading.start :].startswith(source)
    assert "# install the package" in document.text
    assert _section_of(document, "蓝色抽屉") == "Wenda 部署 > 安装 > Linux 推荐"
    assert _section_of(document, "wenda.toml") == "Wenda 部署 > Configuration"


def test_mdx_import_inside_a_paragraph_or_code_is_not_esm() -> None:
    source = "# Title\n\nText\n\n```js\nimport a from 'a'\n```\n## After code\n\nText\nimport is a verb here\n## Next\n"
    document = parse_document(source.encode(), FileType.MDX)
    # Without front matter the first heading is the title, as for Markdown.
    assert document.title == "Title"
    assert _outline(document) == [(1, "Title"), (2, "After code"), (2, "Next")]


# --- AsciiDoc -------------------------------------------------------------------------------------

ASCIIDOC = """// 部署文档
= 部署指南：Wenda
Jane Doe <jane@example.org>
:toc: left

Wenda 是一个自托管的文档问答服务。

== 安装

本节介绍安装。

[[linux]]
=== Linux

在 Linux 上，唯一事实：钥匙在蓝色抽屉里。
== this line continues the paragraph

[source,bash]
----
sudo apt install wenda

== not a heading: listing
----

....
literal

== not a heading: literal
....

////

== not a heading: comment
////

|===
| key | value

== not a heading: table
|===

====
An example.

== not a heading: example block
----

== not a heading: nested listing
----

== not a heading: still the example block
====

```python

## not a heading: fenced code
```

== Configuration ==

Settings live in `wenda.toml`.

## FAQ

Upgrade
-------

升级说明
~~~~~~~~

Back up the index before upgrading.
"""


def test_asciidoc_headings_title_and_sections() -> None:
    document = parse_document(ASCIIDOC.encode(), FileType.ASCIIDOC)
    assert document.file_type is FileType.ASCIIDOC
    assert document.text == ASCIIDOC
    # The document title (level 0) is the title, not a heading: sections sit beside it.
    assert document.title == "部署指南：Wenda"
    assert _outline(document) == [
        (2, "安装"),
        (3, "Linux"),
        (2, "Configuration"),
        (2, "FAQ"),
        (2, "Upgrade"),
        (3, "升级说明"),
    ]
    sources = [
        "== 安装\n",
        "=== Linux\n",
        "== Configuration ==\n",
        "## FAQ\n",
        "Upgrade\n---",
        "升级说明\n~~~",
    ]
    for heading, source in zip(document.headings, sources, strict=True):
        assert document.text[heading.start :].startswith(source)
    assert _section_of(document, "蓝色抽屉") == "安装 > Linux"
    assert _section_of(document, "wenda.toml") == "Configuration"
    assert _section_of(document, "Back up the index") == "Upgrade > 升级说明"


def test_asciidoc_without_document_title_and_unclosed_block() -> None:
    source = "Some text first.\n\n= Part One\n\n== 第一章\n\n----\n== inside an unclosed listing\n"
    document = parse_document(source.encode(), FileType.ASCIIDOC)
    # A level-0 title after content is a book part, so it stays a heading; an unclosed block runs to the end.
    assert _outline(document) == [(1, "Part One"), (2, "第一章")]
    assert document.title == "Part One"


# --- Org ------------------------------------------------------------------------------------------

ORG = """#+TITLE: 部署指南
#+AUTHOR: 张三
#+TODO: TODO WAIT | DONE

Wenda 是一个自托管的文档问答服务。

* 安装
本节介绍安装。\f
** TODO [#A] Linux                                                   :ops:
在 Linux 上，唯一事实：钥匙在蓝色抽屉里。
#+BEGIN_SRC sh
* not a heading: a line of a source block
** nor this
#+END_SRC
#+begin_example
* not a heading: example
#+end_example
* [[https://example.org/config][Configuration]]
Settings live in =wenda.toml=.
#+BEGIN_QUOTE
An unclosed begin line is an ordinary line.
* FAQ
"""


def test_org_headings_title_and_sections() -> None:
    document = parse_document(ORG.encode(), FileType.ORG)
    assert document.file_type is FileType.ORG
    assert document.text == ORG
    assert document.title == "部署指南"
    # TODO keywords, priorities and tags are not part of a title; a link's description is.
    assert _outline(document) == [(1, "安装"), (2, "Linux"), (1, "Configuration"), (1, "FAQ")]
    # The form feed above does not shift the offsets after it (orgparse.loads would split lines there).
    sources = ["* 安装\n", "** TODO [#A] Linux ", "* [[https://example.org/config]", "* FAQ\n"]
    for heading, source in zip(document.headings, sources, strict=True):
        assert document.text[heading.start :].startswith(source)
    assert "* not a heading: a line of a source block" in document.text
    assert _section_of(document, "蓝色抽屉") == "安装 > Linux"
    assert _section_of(document, "wenda.toml") == "Configuration"


def test_org_in_a_chinese_legacy_encoding() -> None:
    source = "#+title: 会议纪要\n\n* 决定\n上线日期定在三月。\n* 后续\n"
    document = parse_document(source.encode("gb18030"), FileType.ORG)
    assert document.text == source
    assert document.title == "会议纪要"
    assert [document.text[h.start :].split("\n")[0] for h in document.headings] == ["* 决定", "* 后续"]


# --- LaTeX ----------------------------------------------------------------------------------------

LATEX = r"""\documentclass{ctexart}
\usepackage{listings}
\usepackage{hyperref}
\title{部署指南：\textbf{Wenda} 服务}
\author{张三}
\date{\today}
\begin{document}
\maketitle
\begin{abstract}
Wenda 是一个自托管的文档问答服务。
\end{abstract}

\section{安装}
本节介绍安装，参见 \href{https://example.org}{官方网站}。% a comment: \section{Commented}

\subsection*{Linux \& macOS}\label{sec:linux}
在 Linux 上，唯一事实：钥匙在\emph{蓝色抽屉}里。

\begin{verbatim}
\section{Not a heading: verbatim}
\end{verbatim}

\begin{lstlisting}[language=Python]
\section{Not a heading: listing}
def port(): return {"https": 8443}
\end{lstlisting}

\begin{comment}
\section{Not a heading: commented out}
\end{comment}

\section[Config]{Configuration of \texttt{wenda.toml}}
Settings live in \verb|wenda.toml|, for example $p \geq 1$.
\end{document}
"""


def test_latex_text_headings_title_and_sections() -> None:
    document = parse_document(LATEX.encode(), FileType.LATEX)
    assert document.file_type is FileType.LATEX
    assert document.title == "部署指南：Wenda 服务"
    assert _outline(document) == [(1, "安装"), (2, "Linux & macOS"), (1, "Configuration of wenda.toml")]
    for heading in document.headings:
        assert document.text[heading.start :].startswith(heading.title + "\n\n")
    text = document.text
    # The text is the plain rendering: markup, comments, the preamble and the day of the parse (\today) are
    # not in it ...
    assert text.startswith("部署指南：Wenda 服务\n\n张三\n\nWenda 是一个自托管的文档问答服务。")
    assert "钥匙在蓝色抽屉里" in text
    assert "官方网站 <https://example.org>" in text
    for noise in ("\\emph", "\\label", "usepackage", "a comment", "Commented"):
        assert noise not in text
    # ... code stays as written and makes no heading; a comment environment is dropped.
    assert "\\section{Not a heading: verbatim}\n" in text
    assert 'def port(): return {"https": 8443}' in text
    assert "commented out" not in text
    assert "Settings live in wenda.toml, for example $p \\geq 1$." in text  # math as written
    assert _section_of(document, "蓝色抽屉") == "安装 > Linux & macOS"
    assert _section_of(document, "Settings live in") == "Configuration of wenda.toml"


def test_latex_levels_are_relative_and_cjk_environment_is_unwrapped() -> None:
    book = r"\begin{CJK}{UTF8}{gbsn}\chapter{第一章}甲\section{第一节}乙\chapter*{附录}丙\end{CJK}"
    document = parse_document(book.encode(), FileType.LATEX)
    assert _outline(document) == [(1, "第一章"), (2, "第一节"), (1, "附录")]
    assert document.text == "第一章\n\n甲\n\n第一节\n\n乙\n\n附录\n\n丙"
    assert document.title == "第一章"  # no \title: the first heading


def test_latex_reads_no_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.tex"
    secret.write_text("机密内容 do-not-read", encoding="utf-8")
    source = (
        f"\\section{{Intro}}\nBefore.\n\\input{{{secret}}}\n\\include{{{secret.with_suffix('')}}}\nAfter.\n"
    )
    document = parse_document(source.encode(), FileType.LATEX)
    assert "do-not-read" not in document.text
    assert "Before." in document.text and "After." in document.text


def test_latex_construct_the_renderer_fails_on_is_kept_as_written() -> None:
    # pylatexenc's rule for \input indexes an argument that is not there and raises IndexError.
    document = parse_document(b"\\section{A}\nText before a bare \\input", FileType.LATEX)
    assert document.text == "A\n\nText before a bare \\input"


@pytest.mark.skipif(sys.platform == "win32", reason="resource limits need POSIX")
def test_latex_deeply_nested_braces_are_a_parse_error_not_a_crash() -> None:
    hostile = b"\\section{x}" + b"{" * 100_000 + b"a" + b"}" * 100_000
    with pytest.raises(DocumentParseError, match=r"^the LaTeX source file is nested too deeply to read"):
        parse_in_subprocess(hostile, FileType.LATEX, timeout_seconds=30, memory_mb=1024)
    # The worker's fork server survives: the next parse works.
    document = parse_in_subprocess(b"\\section{Next}\nok", FileType.LATEX, timeout_seconds=30, memory_mb=1024)
    assert _outline(document) == [(1, "Next")]
