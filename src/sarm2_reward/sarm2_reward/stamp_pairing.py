"""Approximate-time pairing of several message streams on their header stamps (ROS-free).

message_filters is not available on every install, and the reward node needs only one policy:
every frame of a *reference* stream (the first camera) is paired with the message of each other
stream (other cameras, joint states) whose stamp is closest to it, if that is within ``slop``.

A reference frame is decided as soon as no later message can be closer, i.e. when every other
stream has a message stamped at or after it; same-stamp publishers (a simulator, a bag replay)
therefore pair with no waiting. A frame still waiting once a reference frame ``max_delay`` newer
has arrived is decided with what is there (a stalled stream cannot hold the pipeline). Frames
with no partner within ``slop`` are dropped and counted.

Stamps going backwards on a stream are dropped and counted; after ``resync_after`` consecutive
backward messages the stream is taken to have restarted its clock (a bag replay looping, a
simulator reset under use_sim_time) and every buffer is cleared so pairing follows the new
timeline.
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

# Messages kept per stream unless the caller asks for more.
DEFAULT_HISTORY = 16


@dataclass
class PairedFrame:
    """One reference frame with its partners from every stream (reference included)."""

    stamp_ns: int
    items: dict[str, Any]
    stamps_ns: dict[str, int]

    @property
    def skew_ns(self) -> int:
        """Largest distance between a partner's stamp and the reference stamp."""
        return max(abs(s - self.stamp_ns) for s in self.stamps_ns.values())


@dataclass
class PairingStats:
    """Counters for diagnostics; they only grow (clear() keeps them)."""

    paired: int = 0
    unpaired: int = 0            # reference frames dropped: some stream had nothing within slop
    backwards: int = 0           # messages dropped because their stamp went back in time
    timeline_resets: int = 0     # a stream kept going backwards: buffers cleared, new timeline
    unpaired_by_stream: dict[str, int] = field(default_factory=dict)


class StampPairer:
    """Pair messages of ``streams`` by header stamp, driven by ``reference``.

    Stamps are integer nanoseconds. ``history`` bounds every per-stream buffer, including the
    reference frames waiting for partners.
    """

    def __init__(self, streams: Sequence[str], reference: str, slop_ns: int,
                 max_delay_ns: int | None = None, history: int = DEFAULT_HISTORY,
                 resync_after: int = 3):
        if reference not in streams:
            raise ValueError(f'reference stream {reference!r} is not one of {list(streams)}')
        if len(set(streams)) != len(streams):
            raise ValueError(f'stream names must be unique, got {list(streams)}')
        if slop_ns < 0 or history < 1 or resync_after < 1:
            raise ValueError('slop_ns must be >= 0, history and resync_after >= 1')
        self.streams = tuple(streams)
        self.reference = reference
        self.slop_ns = int(slop_ns)
        self.max_delay_ns = int(max_delay_ns if max_delay_ns is not None else max(slop_ns, 1))
        self.history = history
        self.resync_after = resync_after
        self.stats = PairingStats(unpaired_by_stream={s: 0 for s in streams if s != reference})
        self._buffers: dict[str, deque] = {s: deque() for s in streams}
        self._last_stamp: dict[str, int | None] = dict.fromkeys(streams)
        self._behind: dict[str, int] = dict.fromkeys(streams, 0)

    def clear(self) -> None:
        """Forget every buffered message and stamp (new episode or new timeline)."""
        for stream in self.streams:
            self._buffers[stream].clear()
            self._last_stamp[stream] = None
            self._behind[stream] = 0

    def pending(self) -> int:
        """Return how many reference frames are waiting for partners."""
        return len(self._buffers[self.reference])

    def add(self, stream: str, stamp_ns: int, payload: Any) -> list[PairedFrame]:
        """Buffer one message; return the frames this arrival completes, oldest first."""
        if stream not in self._buffers:
            raise ValueError(f'unknown stream {stream!r}; streams are {list(self.streams)}')
        stamp_ns = int(stamp_ns)
        last = self._last_stamp[stream]
        if last is not None and stamp_ns < last:
            self.stats.backwards += 1
            self._behind[stream] += 1
            if self._behind[stream] < self.resync_after:
                return []
            self.stats.timeline_resets += 1
            self.clear()
        self._behind[stream] = 0
        self._last_stamp[stream] = stamp_ns
        buffer = self._buffers[stream]
        buffer.append((stamp_ns, payload))
        if len(buffer) > self.history:
            buffer.popleft()
            if stream == self.reference:
                self._count_unpaired(None)
        return self._match()

    def _count_unpaired(self, missing: str | None) -> None:
        self.stats.unpaired += 1
        if missing is not None:
            self.stats.unpaired_by_stream[missing] += 1

    def _match(self) -> list[PairedFrame]:
        done: list[PairedFrame] = []
        references = self._buffers[self.reference]
        while references:
            ref_stamp, ref_payload = references[0]
            forced = references[-1][0] - ref_stamp > self.max_delay_ns
            items = {self.reference: ref_payload}
            stamps = {self.reference: ref_stamp}
            waiting = False
            missing = None
            for stream in self.streams:
                if stream == self.reference:
                    continue
                buffer = self._buffers[stream]
                best = min(buffer, key=lambda m: abs(m[0] - ref_stamp), default=None)
                settled = forced or (buffer and buffer[-1][0] >= ref_stamp)
                if best is None or abs(best[0] - ref_stamp) > self.slop_ns:
                    # Nothing close yet: give up only once nothing later can be close enough.
                    if forced or (buffer and buffer[-1][0] > ref_stamp + self.slop_ns):
                        missing = stream
                        break
                    waiting = True
                elif not settled:
                    waiting = True
                else:
                    items[stream] = best[1]
                    stamps[stream] = best[0]
            if missing is not None:
                references.popleft()
                self._count_unpaired(missing)
                continue
            if waiting:
                break
            references.popleft()
            for stream, stamp in stamps.items():
                if stream != self.reference:
                    # Older messages can never be the closest partner of a later frame.
                    buffer = self._buffers[stream]
                    while buffer and buffer[0][0] < stamp:
                        buffer.popleft()
            self.stats.paired += 1
            done.append(PairedFrame(ref_stamp, items, stamps))
        return done
