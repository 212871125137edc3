"""Before asking the model: can these passages answer the question at all?

A question that names something — a program, a format, an acronym, a path, a version — asks about that
thing. When none of the passages mentions it, the documents cannot answer the question, whatever a model
would write from them; such near misses ("how do I format a USB stick as exFAT?" over passages about FAT)
are where small models invent most. So wenda refuses them before generation.

What counts as a name: in a Chinese question, any Latin-script word of two or more letters (Chinese text
writes the names of software, formats and standards that way); in any question, a word with a digit or with
inner punctuation (SHA-256, ext4, /etc/hosts, C.UTF-8) or written in capitals (RSA, HTTPS). In an English
question also a word with a capital inside it (exFAT, GitHub, macOS) and a word English hardly uses: the
names of programs and daemons are mostly lower-case words no dictionary has (rsyncd, kubectl, journald).
"Hardly" is a Zipf frequency below ``RARE_ZIPF`` in ``wordfreq``'s English list (about once in 10 million
words); ordinary words, however technical (format, backup, repository, commit), are far above it.

Comparison ignores case and punctuation, so "GPG-sign" matches "gpg --sign" and "SHA256" matches "SHA-256";
a rare English word also matches another form of itself ("rebasing" is mentioned by "rebase": a word that
begins with its Snowball stem), since the question is free to inflect it. "rsyncd" stays apart from "rsync".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache

import snowballstemmer
from wordfreq import zipf_frequency

from app.rag.lexical import STOPWORDS

_CJK = re.compile(r"[\u3400-\u9fff]")
_LATIN_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-./+:]*[A-Za-z0-9+]|[A-Za-z]{2,}")
_NOT_ALNUM = re.compile(r"[^0-9a-z\u3400-\u9fff]+")
# Names shorter than this (after folding) are matched as whole words, longer ones anywhere.
SHORT_NAME = 5
# An English word less frequent than this (Zipf scale: log10 of uses per billion words) is taken for a name.
RARE_ZIPF = 2.0
_ALPHABETIC = re.compile(r"[A-Za-z]+")
_STEMMER = snowballstemmer.stemmer("english")


def _folded(text: str) -> str:
    return _NOT_ALNUM.sub("", text.lower())


def _is_name(word: str, *, in_chinese: bool) -> bool:
    letters = sum(ch.isalpha() for ch in word)
    if word.lower() in STOPWORDS or len(_folded(word)) < 2:
        return False
    if in_chinese and letters >= 2:
        return True
    has_digit = any(ch.isdigit() for ch in word)
    inner_punctuation = any(ch in "-_./+:" for ch in word.strip("-_./+:"))
    capitals = sum(ch.isupper() for ch in word)
    if (has_digit and letters > 0) or inner_punctuation or (capitals >= 2 and capitals == letters):
        return True
    if in_chinese:
        return False
    inner_capital = any(ch.isupper() for ch in word[1:]) and capitals < letters
    return inner_capital or _is_rare_english(word)


def _is_rare_english(word: str) -> bool:
    return len(word) >= 4 and _ALPHABETIC.fullmatch(word) is not None and _zipf(word.lower()) < RARE_ZIPF


@cache
def _zipf(word: str) -> float:
    return float(zipf_frequency(word, "en"))


def _stem(word: str) -> str:
    return str(_STEMMER.stemWord(word.lower()))


def named_things(question: str) -> list[str]:
    """The words of ``question`` that name something (see the module docstring), in order, once each."""
    in_chinese = bool(_CJK.search(question))
    names: list[str] = []
    for word in _LATIN_WORD.findall(question):
        word = word.rstrip(".:")
        if _is_name(word, in_chinese=in_chinese) and word not in names:
            names.append(word)
    return names


def unmentioned_names(question: str, passage_texts: Iterable[str]) -> list[str]:
    """Names in the question that no passage mentions (case and punctuation ignored)."""
    texts = list(passage_texts)
    return [name for name in named_things(question) if not any(mentions(text, name) for text in texts)]


def mentions(text: str, name: str) -> bool:
    """``text`` mentions ``name``, case and punctuation ignored (a rare English word: in any form)."""
    if _is_rare_english(name):
        # A word that begins with the name's stem: "rebase" for "rebasing", "diff" for "diffing" (Snowball
        # undoubles the stem's last letter: "dif").
        stem = _stem(name)
        if any(word.lower().startswith(stem) for word in _ALPHABETIC.findall(text)):
            return True
    key = _folded(name)
    if len(key) >= SHORT_NAME:
        return key in _folded(text)
    # A short name must stand as a word of its own: "rsa" is not mentioned by "parsable".
    return re.search(rf"(?<![a-z0-9]){re.escape(name.lower())}(?![a-z0-9])", text.lower()) is not None
