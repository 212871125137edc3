"""The embedder's lock is handed over in arrival order: an ingest job embedding batch after batch cannot
keep a second job (or a token count) waiting for the whole of its run."""

from __future__ import annotations

import threading
import time

from app.rag.embedding import FairLock


def test_a_waiter_gets_the_lock_before_a_holder_that_asks_again() -> None:
    lock = FairLock()
    order: list[str] = []
    b_waiting = threading.Event()

    def busy_job() -> None:
        for batch in range(20):
            with lock.held():
                order.append(f"a{batch}")
                if batch == 0:
                    assert b_waiting.wait(5)
                    time.sleep(0.05)  # b is queued by now
                time.sleep(0.002)

    def small_job() -> None:
        time.sleep(0.01)  # a holds the lock first
        b_waiting.set()
        with lock.held():
            order.append("b")

    threads = [threading.Thread(target=busy_job), threading.Thread(target=small_job)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # b asked during a's first hold, so it comes right after it, however fast a asks again.
    assert order[:2] == ["a0", "b"]
    assert len(order) == 21


def test_it_is_exclusive_and_survives_an_exception() -> None:
    lock = FairLock()
    inside = 0
    peak = 0

    def work() -> None:
        nonlocal inside, peak
        for _ in range(50):
            with lock.held():
                inside += 1
                peak = max(peak, inside)
                time.sleep(0.0005)
                inside -= 1

    try:
        with lock.held():
            raise RuntimeError
    except RuntimeError:
        pass
    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert peak == 1 and inside == 0
