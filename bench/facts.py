"""Date and number questions answered with and without the fact layer, side by side, and what the layer costs
a question that needs no fact.

Each question of ``eval/facts/questions.jsonl`` carries the instant it is asked at (``now``), the asker's time
zone (``tz``) and the answers that count (``expected``: any one, written in the answer, spaces and thousands
separators aside). The clock is frozen at ``now`` for each question, so the set means the same on any day.
Questions are asked through the real answer flow (``app.services.asking``, as ``/v1/ask`` does) of the
configured model (by default the bundled 0.5B model on the CPU) over a small real collection (the first file
of each dev answers corpus, ingested with the real embedder), in two modes:

* ``with`` — facts on: today's date in the system prompt, dates, day counts and sums as cited evidence, the
  answer checked against them;
* ``without`` — ``facts.enabled`` off: the documents alone, as a plain RAG pipeline answers.

An answer is correct when it is grounded (not the refusal) and writes an expected value; ``raw`` also counts
what the model wrote before any check (what a pipeline without wenda's checks would have shown). Also reported: the
post-check's verdicts, and the layer's own time (``FactLayer.gather``) on the dev answer sets' questions, which
ask about documents and need no fact (the goal: under 2 ms at p50).

Run from the repository root::

    python bench/facts.py                       # both modes, every question
    python bench/facts.py --modes with --limit 10
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import json
import re
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from app.components import Components, build_components
from app.config import Settings
from app.rag.facts.clock import FixedClock
from app.rag.facts.layer import FactLayer
from app.services import asking

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "eval" / "dev"
COLLECTION = "facts-bench"


def normalised(text: str) -> str:
    return re.sub(r"[\s,，]", "", text)


def ingest(components: Components, corpora: list[Path]) -> None:
    from app.services import documents as uploads

    files = [sorted(p for p in corpus.iterdir() if p.is_file())[0] for corpus in corpora]
    for path in files:
        uploads.upload(
            components,
            tenant_id=components.default_tenant_id,
            collection=COLLECTION,
            filename=path.name,
            data=path.read_bytes(),
            metadata={},
        )
    while components.worker.run_once():
        pass


async def ask(components: Components, row: dict[str, Any], enabled: bool) -> dict[str, Any]:
    components.facts = FactLayer(
        clock=FixedClock(datetime.fromisoformat(row["now"])),
        default_timezone=components.settings.facts.default_timezone,
        enabled=enabled,
    )
    began = time.perf_counter()
    started = await asking.start_answer(
        components,
        tenant_id=components.default_tenant_id,
        ask=asking.AskInput(collection=COLLECTION, question=row["question"], timezone=row["tz"]),
        endpoint="cli",
    )
    answer = await started.result()
    seconds = time.perf_counter() - began
    correct = answer.grounded and any(normalised(e) in normalised(answer.text) for e in row["expected"])
    # What the model wrote, before wenda checked (or corrected) it: a plain pipeline would have shown this.
    raw_correct = any(normalised(e) in normalised(answer.raw_answer) for e in row["expected"])
    return {
        "id": row["id"],
        "language": row["language"],
        "kind": row["kind"],
        "correct": correct,
        "raw_correct": raw_correct,
        "grounded": answer.grounded,
        "verdict": answer.fact_check.verdict.value,
        "answer": answer.text,
        "raw": answer.raw_answer,
        "seconds": seconds,
    }


def layer_latency(questions: list[str], rounds: int) -> dict[str, float]:
    """``FactLayer.gather`` alone on questions about documents, each asked ``rounds`` times."""
    layer = FactLayer()

    async def run() -> list[float]:
        timings = []
        for question in questions:  # the first pass loads the recognizer where a question reaches it
            await layer.gather(question, "zh" if re.search(r"[\u3400-\u9fff]", question) else "en")
        for _ in range(rounds):
            for question in questions:
                language = "zh" if re.search(r"[\u3400-\u9fff]", question) else "en"
                began = time.perf_counter()
                await layer.gather(question, language)
                timings.append(time.perf_counter() - began)
        return timings

    ms = sorted(1000 * t for t in asyncio.run(run()))
    return {
        "questions": len(questions),
        "p50_ms": round(statistics.median(ms), 4),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 4),
        "max_ms": round(ms[-1], 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=ROOT / "eval" / "facts" / "questions.jsonl")
    parser.add_argument("--modes", default="with,without", help="comma-separated: with, without")
    parser.add_argument("--limit", type=int, default=0, help="first N questions only")
    parser.add_argument("--rounds", type=int, default=50, help="rounds of the layer-latency measurement")
    parser.add_argument("--verbose", action="store_true", help="print every answer")
    parser.add_argument("--dev", type=Path, default=DEV, help="the dev evaluation data (default %(default)s)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.questions.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[: args.limit] if args.limit else rows
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    document_questions = [
        json.loads(line)["question"]
        for corpus in ("answers-zh", "answers-en")
        for line in (args.dev / corpus / "questions.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    latency = layer_latency(document_questions, args.rounds)

    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="wenda-bench-facts-") as tmp:
        settings = Settings(data_dir=Path(tmp), database_url="")
        components = build_components(settings)
        ingest(components, [args.dev / "answers-zh" / "corpus", args.dev / "answers-en" / "corpus"])
        for mode in modes:
            results[mode] = []
            for row in rows:
                outcome = asyncio.run(ask(components, row, enabled=mode == "with"))
                results[mode].append(outcome)
                if args.verbose:
                    mark = "ok " if outcome["correct"] else "-- "
                    print(f"{mode:8}{mark}{row['id']} {row['question']} -> {outcome['raw']!r} => {outcome['answer']!r}")
        components.worker.stop()
        components.close_database()

    summary: dict[str, Any] = {"benchmark": "facts", "questions": len(rows), "layer_latency": latency, "modes": {}}
    print(f"\n{len(rows)} date and number questions ({sum(r['language'] == 'zh' for r in rows)} Chinese)")
    print(f"{'':14}" + "".join(f"{m:>12}" for m in modes))
    groups: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups["all"].append(index)
        groups[f"lang {row['language']}"].append(index)
        groups[f"kind {row['kind']}"].append(index)
    for group, indexes in groups.items():
        cells = "".join(
            f"{sum(results[m][i]['correct'] for i in indexes) / len(indexes):>12.3f}" for m in modes
        )
        print(f"{group:14}{cells}   (n={len(indexes)})")
    raw_cells = "".join(f"{sum(r['raw_correct'] for r in results[m]) / len(rows):>12.3f}" for m in modes)
    print(f"{'raw, unchecked':14}{raw_cells}   (the model's own text, before the checks)")
    for mode in modes:
        verdicts = Counter(r["verdict"] for r in results[mode])
        seconds = [r["seconds"] for r in results[mode]]
        summary["modes"][mode] = {
            "accuracy": round(sum(r["correct"] for r in results[mode]) / len(rows), 4),
            "raw_accuracy": round(sum(r["raw_correct"] for r in results[mode]) / len(rows), 4),
            "groups": {
                g: round(sum(results[mode][i]["correct"] for i in ix) / len(ix), 4) for g, ix in groups.items()
            },
            "grounded": sum(r["grounded"] for r in results[mode]),
            "verdicts": dict(verdicts),
            "answer_seconds_p50": round(statistics.median(seconds), 3),
            "misses": [r["id"] for r in results[mode] if not r["correct"]],
        }
        print(f"{mode}: post-check verdicts {dict(verdicts)}; p50 {statistics.median(seconds):.2f} s per answer")
    print(
        f"fact layer on {latency['questions']} questions that need no fact: p50 {latency['p50_ms']:.3f} ms, "
        f"p99 {latency['p99_ms']:.3f} ms, max {latency['max_ms']:.3f} ms"
    )
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
