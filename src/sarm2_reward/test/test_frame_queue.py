"""The hand-over queue never grows past its capacity and counts what it drops."""

import threading
import time

import pytest

from sarm2_reward.frame_queue import DroppingQueue


def test_oldest_items_are_dropped_and_counted_when_full():
    queue = DroppingQueue(capacity=2)
    assert [queue.put(i) for i in range(5)] == [False, False, True, True, True]
    assert len(queue) == 2 and queue.dropped == 3 and queue.pushed == 5
    assert [queue.get_nowait(), queue.get_nowait(), queue.get_nowait()] == [3, 4, None]


def test_capacity_one_always_hands_over_the_newest():
    queue = DroppingQueue()
    for i in range(10):
        queue.put(i)
    assert queue.get_nowait() == 9 and queue.dropped == 9


def test_slow_consumer_fast_producer_stays_bounded_and_accounts_for_every_item():
    queue = DroppingQueue(capacity=3)
    consumed = []
    stop = threading.Event()

    def consumer():
        while not stop.is_set():
            item = queue.get(timeout=0.05)
            if item is not None:
                consumed.append(item)
                time.sleep(0.002)  # slower than the producer

    worker = threading.Thread(target=consumer)
    worker.start()
    max_len = 0
    for i in range(2000):
        queue.put(i)
        max_len = max(max_len, len(queue))
    time.sleep(0.1)
    stop.set()
    worker.join()
    consumed += [queue.get_nowait() for _ in range(len(queue))]
    assert max_len <= 3
    assert queue.dropped > 0
    assert len(consumed) + queue.dropped == 2000
    assert consumed == sorted(consumed)  # time order kept


def test_get_waits_for_an_item_and_close_wakes_waiters():
    queue = DroppingQueue()
    threading.Timer(0.05, queue.put, args=('frame',)).start()
    assert queue.get(timeout=2.0) == 'frame'
    threading.Timer(0.05, queue.close).start()
    start = time.monotonic()
    assert queue.get(timeout=5.0) is None
    assert time.monotonic() - start < 2.0


def test_clear_is_not_a_drop():
    queue = DroppingQueue(capacity=4)
    queue.put(1)
    queue.put(2)
    assert queue.clear() == 2 and queue.dropped == 0 and len(queue) == 0


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match='capacity'):
        DroppingQueue(0)
