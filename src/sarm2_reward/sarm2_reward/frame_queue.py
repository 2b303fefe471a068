"""A bounded, thread-safe hand-over from subscription callbacks to the inference worker (ROS-free).

Subscriptions only store data; inference runs elsewhere. When the model is slower than the
cameras the queue must not grow: it holds at most ``capacity`` items and a new item pushes out
the oldest one, which is counted as dropped. The worker takes items oldest first (a causal
reward window wants frames in time order), so with ``capacity=1`` it always gets the newest
frame and every frame it could not keep up with is a counted drop.
"""

from collections import deque
import threading
from typing import Any


class DroppingQueue:
    """Keep the newest ``capacity`` items; count every item pushed out unprocessed."""

    def __init__(self, capacity: int = 1):
        if capacity < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        self.capacity = capacity
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.pushed = 0
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Add ``item``; return True if an older item had to be dropped to make room."""
        with self._cond:
            self.pushed += 1
            dropped = len(self._items) >= self.capacity
            if dropped:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> Any | None:
        """Take the oldest item, waiting up to ``timeout`` s; None on timeout or once closed."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def get_nowait(self) -> Any | None:
        """Take the oldest item or return None at once."""
        return self.get(timeout=0)

    def clear(self) -> int:
        """Discard waiting items (a reset); return how many. They are not counted as drops."""
        with self._cond:
            count = len(self._items)
            self._items.clear()
            return count

    def close(self) -> None:
        """Wake every waiting ``get`` (shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
