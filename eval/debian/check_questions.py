"""Check eval/debian/questions.jsonl against the corpus built by build_corpus.sh.

    python eval/debian/check_questions.py CORPUS_DIR [QUESTIONS_JSONL]

CORPUS_DIR is the folder given to build_corpus.sh (it holds zh/ and en/). Each HTML file is turned into text
with wenda's own parser (ingest.parsing.parse_document), so the checks see the text the service indexes:

* every line is a well-formed question (fields, id, lang, type) and ids are unique;
* a fact question names gold files that exist in CORPUS_DIR/<lang>/, its gold_text occurs in one of them
  (all whitespace removed on both sides), and at least one answer keyword occurs in its gold_text
  (case-insensitive);
* an unanswerable question has no gold files and no keywords, and none of the strings recorded below for it
  (the answer it would need) occurs anywhere in its language's corpus (case-insensitive, whitespace removed).

Exits 0 when everything passes, 1 otherwise. Needs only the standard library and wenda's parser (run it from a
checkout, inside wenda's virtualenv).
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from app.rag.types import FileType  # noqa: E402
from ingest.parsing import parse_document  # noqa: E402

DEFAULT_QUESTIONS = Path(__file__).resolve().with_name("questions.jsonl")
LANGS = ("zh", "en")
TYPES = ("fact", "unanswerable")
ID_PATTERN = re.compile(r"deb-(zh|en)-(u?)\d{2}")
FACT_KEYS = {"id", "lang", "question", "gold_sources", "answer_keywords", "gold_text", "type"}
UNANSWERABLE_KEYS = {"id", "lang", "question", "gold_sources", "answer_keywords", "type"}
_WHITESPACE = re.compile(r"\s+")

# What an answer to each unanswerable question would have to say; none of it may be in the corpus.
ABSENT: dict[str, list[str]] = {
    # sshd's default port and the directive that changes it
    "deb-zh-u01": ["port 22", "端口 22", "22 端口", "22端口", "ListenAddress", "22/tcp"],
    # screen's split command (^A S, ^A |)
    "deb-zh-u02": ["^A S", "^A |", "分屏", "分割窗口", "分割屏幕", "split-window"],
    # a pandoc command line for Markdown to DOCX
    "deb-zh-u03": ["docx", "pandoc -", "pandoc input", "pandoc README"],
    # make's parallel jobs
    "deb-zh-u04": ["make -j", "--jobs", "-j$(nproc)", "-j 4", "-j4", "nproc"],
    "deb-en-u01": ["port 22", "ListenAddress", "22/tcp"],
    "deb-en-u02": ["MaxRequestWorkers", "MaxClients", "ServerLimit", "ThreadsPerChild", "mpm_event.conf"],
    "deb-en-u03": ["limit rate", "ct state new", "/minute", "per minute"],
    "deb-en-u04": ["rotate 4", "rotate 7", "rotate 52", "weekly"],
}


def squash(text: str) -> str:
    return _WHITESPACE.sub("", text)


def load_corpus(corpus: Path) -> dict[str, dict[str, str]]:
    texts: dict[str, dict[str, str]] = {}
    for lang in LANGS:
        folder = corpus / lang
        files = sorted(folder.glob("*.html")) if folder.is_dir() else []
        if not files:
            raise SystemExit(f"no HTML files in {folder}; build the corpus with eval/debian/build_corpus.sh")
        texts[lang] = {}
        for path in files:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # bs4 warns that XHTML looks like XML
                texts[lang][path.name] = parse_document(path.read_bytes(), FileType.HTML).text
    return texts


def check(questions: list[dict[str, Any]], texts: dict[str, dict[str, str]]) -> list[str]:
    errors: list[str] = []
    seen: set[str] = set()
    for n, q in enumerate(questions, 1):
        qid = q.get("id", f"line {n}")
        where = f"{qid}:"
        if qid in seen:
            errors.append(f"{where} duplicate id")
        seen.add(qid)
        lang, kind = q.get("lang"), q.get("type")
        if lang not in LANGS or kind not in TYPES:
            errors.append(f"{where} lang must be one of {LANGS} and type one of {TYPES}")
            continue
        match = ID_PATTERN.fullmatch(str(qid))
        if not match or match.group(1) != lang or bool(match.group(2)) != (kind == "unanswerable"):
            errors.append(f"{where} id does not follow deb-{lang}-NN / deb-{lang}-uNN for a {kind} question")
        if not isinstance(q.get("question"), str) or not q["question"].strip():
            errors.append(f"{where} empty question")
        if kind == "fact":
            if set(q) != FACT_KEYS:
                errors.append(f"{where} fields must be {sorted(FACT_KEYS)}, got {sorted(q)}")
                continue
            errors.extend(f"{where} {problem}" for problem in check_fact(q, texts[lang]))
        else:
            if set(q) != UNANSWERABLE_KEYS:
                errors.append(f"{where} fields must be {sorted(UNANSWERABLE_KEYS)}, got {sorted(q)}")
                continue
            if q["gold_sources"] or q["answer_keywords"]:
                errors.append(f"{where} an unanswerable question has empty gold_sources and answer_keywords")
            corpus = squash("\n".join(texts[lang].values())).lower()
            for needle in ABSENT.get(qid, []):
                if squash(needle).lower() in corpus:
                    errors.append(f"{where} the corpus contains {needle!r}, which may answer it")
    return errors


def check_fact(q: dict[str, Any], texts: dict[str, str]) -> list[str]:
    problems: list[str] = []
    sources, keywords, gold = q["gold_sources"], q["answer_keywords"], q["gold_text"]
    if not sources or not all(isinstance(s, str) for s in sources):
        return ["gold_sources must be a non-empty list of file names"]
    if not keywords or not all(isinstance(k, str) and k.strip() for k in keywords):
        return ["answer_keywords must be a non-empty list of non-empty strings"]
    if not isinstance(gold, str) or not gold.strip():
        return ["empty gold_text"]
    missing = [s for s in sources if s not in texts]
    if missing:
        problems.append(f"gold_sources not in the corpus: {missing}")
    needle = squash(gold)
    if not any(needle in squash(texts[s]) for s in sources if s in texts):
        problems.append(f"gold_text not found in {sources}: {gold[:60]!r}...")
    if not any(k.lower() in gold.lower() for k in keywords):
        problems.append(f"no answer keyword {keywords} occurs in the gold_text")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    corpus = Path(argv[1])
    questions_path = Path(argv[2]) if len(argv) == 3 else DEFAULT_QUESTIONS
    questions = []
    for n, line in enumerate(questions_path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                questions.append(json.loads(line))
            except json.JSONDecodeError as exc:
                print(f"FAIL {questions_path}:{n}: not JSON: {exc}")
                return 1
    texts = load_corpus(corpus)
    for lang in LANGS:
        sizes = ", ".join(f"{name} {len(text) // 1000}k chars" for name, text in texts[lang].items())
        print(f"corpus {lang}: {sizes}")
    counts = Counter((q.get("lang"), q.get("type")) for q in questions)
    for lang in LANGS:
        print(f"questions {lang}: " + ", ".join(f"{counts[(lang, kind)]} {kind}" for kind in TYPES))
    errors = check(questions, texts)
    for error in errors:
        print(f"FAIL {error}")
    if errors:
        print(f"{len(errors)} problem(s) in {len(questions)} questions")
        return 1
    print(f"OK: all {len(questions)} questions pass")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
