"""Approximate-time pairing of several message streams on their header stamps (ROS-free).

message_filters is not available on every install, and the reward node needs only one policy:
every frame of a *reference* stream (the first camera) is paired with a partner from each other
stream (other cameras, joint states):

- the message stamped closest to the frame, if it is within ``slop`` (cameras; any stream);
- for the streams named in ``interpolate`` (joint states), the two messages that bracket the
  frame's stamp, blended linearly to it (a ``Blend``), when they are at most ``max_gap`` apart.
  Joint positions change smoothly, so a blend of two states 50 ms apart is closer to the state
  at the frame's time than either of them; a recorded rollout holds only the joint state used
  at each control step, stamped ~20 ms away from the camera frame, so nearest-within-slop alone
  loses many of its frames. Without a bracket (first or last frame, a gap in the stream) the
  nearest message is used if it is within ``max(slop, max_gap / 2)``: no farther than the
  nearest message of an acceptable bracket can be. A message at most ``fresh`` older than the
  frame is used at once, without waiting for the next one: from a fast stream (a 200 Hz arm)
  interpolation would change it by the motion over a few milliseconds, while the wait would
  hold every frame (and, when frames come faster than the model, the model) for up to one
  period of that stream.

A reference frame is decided as soon as no later message can change its partners, i.e. when
every other stream has a message stamped at or after it; same-stamp publishers (a simulator, a
bag replay) therefore pair with no waiting. A frame still waiting ``max_delay`` after it arrived
(by the injected monotonic clock, so the end of a stream cannot hold it), or once a reference
frame stamped ``max_delay`` later has arrived, is decided with what is there. Frames with no
partner are dropped and counted.

Stamps going backwards on a stream are dropped and counted; after ``resync_after`` consecutive
backward messages the stream is taken to have restarted its clock (a bag replay looping, a
simulator reset under use_sim_time) and every buffer is cleared so pairing follows the new
timeline.

Every reference frame added is accounted for exactly once (``PairingStats``):
added = paired + unpaired + backwards (reference stream) + discarded (cleared) + pending().
"""

from collections import deque
from dataclasses import dataclass, field
import struct
import time
from typing import Any, Callable, Sequence

# Messages kept per stream unless the caller asks for more.
DEFAULT_HISTORY = 16
NS = 1_000_000_000
# CDR encapsulation identifiers (big/little endian pairs): plain CDR and XCDR2 variants. In each
# the header stamp of a message that starts with std_msgs/Header is the first 8 payload bytes.
_CDR_KINDS = frozenset(range(0x00, 0x0c))
_WAIT = object()  # a partner may still arrive


def header_stamp_ns(serialized: bytes) -> int:
    """Return the header stamp (ns) of a serialized (CDR) message whose first field is a Header.

    sensor_msgs/Image and sensor_msgs/JointState start with std_msgs/Header, so a raw
    subscription can pair and drop frames without deserializing them. ValueError if the bytes
    are too short or not CDR.
    """
    if len(serialized) < 12 or serialized[0] != 0 or serialized[1] not in _CDR_KINDS:
        raise ValueError(f'not a CDR message with a header ({len(serialized)} bytes, '
                         f'encapsulation {bytes(serialized[:2]).hex() or "none"})')
    sec, nanosec = struct.unpack_from('<iI' if serialized[1] & 1 else '>iI', serialized, 4)
    if nanosec >= NS:
        raise ValueError(f'header stamp nanosec {nanosec} is not below 1e9')
    return sec * NS + nanosec


@dataclass
class Blend:
    """A partner interpolated to the frame's stamp: (1 - weight) * before + weight * after."""

    before: Any
    after: Any
    weight: float


@dataclass
class PairedFrame:
    """One reference frame with its partners from every stream (reference included).

    ``items[stream]`` is the partner message, or a ``Blend`` of two for interpolated streams;
    ``stamps_ns[stream]`` is the stamp of the (nearest) message used.
    """

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
    interpolated: int = 0        # paired frames with at least one blended partner
    unpaired: int = 0            # reference frames dropped: some stream had no partner
    backwards: int = 0           # messages dropped because their stamp went back in time
    timeline_resets: int = 0     # a stream kept going backwards: buffers cleared, new timeline
    discarded: int = 0           # waiting reference frames forgotten by clear() (resets)
    unpaired_by_stream: dict[str, int] = field(default_factory=dict)
    backwards_by_stream: dict[str, int] = field(default_factory=dict)


class StampPairer:
    """Pair messages of ``streams`` by header stamp, driven by ``reference``.

    Stamps are integer nanoseconds; ``clock`` returns monotonic nanoseconds (arrival times).
    ``history`` bounds every per-stream buffer, including the reference frames waiting for
    partners (an int for every stream, or a dict naming some streams; others get the default).
    """

    def __init__(self, streams: Sequence[str], reference: str, slop_ns: int,
                 max_delay_ns: int | None = None, history: int | dict = DEFAULT_HISTORY,
                 resync_after: int = 3, interpolate: Sequence[str] = (), max_gap_ns: int = 0,
                 fresh_ns: int = 0, clock: Callable[[], int] = time.monotonic_ns):
        if reference not in streams:
            raise ValueError(f'reference stream {reference!r} is not one of {list(streams)}')
        if len(set(streams)) != len(streams):
            raise ValueError(f'stream names must be unique, got {list(streams)}')
        if reference in interpolate or not set(interpolate) <= set(streams):
            raise ValueError(f'interpolate must name non-reference streams, got {interpolate}')
        sizes = history if isinstance(history, dict) else dict.fromkeys(streams, history)
        self.history = {s: int(sizes.get(s, DEFAULT_HISTORY)) for s in streams}
        if min(slop_ns, max_gap_ns, fresh_ns) < 0 or min(self.history.values()) < 1 \
                or resync_after < 1:
            raise ValueError('slop_ns, max_gap_ns and fresh_ns must be >= 0, history and '
                             'resync_after >= 1')
        self.streams = tuple(streams)
        self.reference = reference
        self.slop_ns = int(slop_ns)
        self.max_delay_ns = int(max_delay_ns if max_delay_ns is not None else max(slop_ns, 1))
        self.resync_after = resync_after
        self.interpolate = frozenset(interpolate)
        self.max_gap_ns = int(max_gap_ns)
        self.fresh_ns = int(fresh_ns)
        self._clock = clock
        others = [s for s in streams if s != reference]
        self.stats = PairingStats(unpaired_by_stream=dict.fromkeys(others, 0),
                                  backwards_by_stream=dict.fromkeys(streams, 0))
        # Entries are (stamp_ns, payload); reference entries also carry their arrival time.
        self._buffers: dict[str, deque] = {s: deque() for s in streams}
        self._last_stamp: dict[str, int | None] = dict.fromkeys(streams)
        self._behind: dict[str, int] = dict.fromkeys(streams, 0)

    def clear(self) -> None:
        """Forget every buffered message and stamp (new episode or new timeline)."""
        self.stats.discarded += len(self._buffers[self.reference])
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
            self.stats.backwards_by_stream[stream] += 1
            self._behind[stream] += 1
            if self._behind[stream] < self.resync_after:
                return []
            self.stats.timeline_resets += 1
            self.clear()
        self._behind[stream] = 0
        self._last_stamp[stream] = stamp_ns
        buffer = self._buffers[stream]
        buffer.append((stamp_ns, payload, self._clock()) if stream == self.reference
                      else (stamp_ns, payload))
        if len(buffer) > self.history[stream]:
            buffer.popleft()
            if stream == self.reference:
                self._count_unpaired(None)
        return self._match()

    def flush_expired(self) -> list[PairedFrame]:
        """Decide frames that waited ``max_delay`` since they arrived (call it periodically)."""
        return self._match()

    def _count_unpaired(self, missing: str | None) -> None:
        self.stats.unpaired += 1
        if missing is not None:
            self.stats.unpaired_by_stream[missing] += 1

    def _partner(self, stream: str, ref_stamp: int, forced: bool):
        """Return (partner, stamp used, oldest stamp to keep), _WAIT, or None (no partner)."""
        before = after = None
        for entry in self._buffers[stream]:
            if entry[0] <= ref_stamp:
                before = entry
            if entry[0] >= ref_stamp:
                after = entry
                break
        keep = (before or after or (ref_stamp,))[0]
        if after is None and before is not None and stream in self.interpolate \
                and ref_stamp - before[0] <= self.fresh_ns:
            return before[1], before[0], keep
        if after is None and not forced:
            return _WAIT  # a later message may still be closer, or complete a bracket
        if before is not None and after is not None and after is not before \
                and stream in self.interpolate and after[0] - before[0] <= self.max_gap_ns:
            weight = (ref_stamp - before[0]) / (after[0] - before[0])
            nearest = before if weight <= 0.5 else after
            return Blend(before[1], after[1], weight), nearest[0], keep
        bound = max(self.slop_ns, self.max_gap_ns // 2) if stream in self.interpolate \
            else self.slop_ns
        candidates = [e for e in (before, after) if e is not None
                      and abs(e[0] - ref_stamp) <= bound]
        if not candidates:
            return None
        best = min(candidates, key=lambda e: abs(e[0] - ref_stamp))
        return best[1], best[0], keep

    def _match(self) -> list[PairedFrame]:
        done: list[PairedFrame] = []
        references = self._buffers[self.reference]
        now = self._clock()
        while references:
            ref_stamp, ref_payload, arrived = references[0]
            forced = references[-1][0] - ref_stamp > self.max_delay_ns \
                or now - arrived > self.max_delay_ns
            items = {self.reference: ref_payload}
            stamps = {self.reference: ref_stamp}
            keep = {}
            waiting = False
            missing = None
            for stream in self.streams:
                if stream == self.reference:
                    continue
                found = self._partner(stream, ref_stamp, forced)
                if found is None:
                    missing = stream
                    break
                if found is _WAIT:
                    waiting = True
                    continue
                items[stream], stamps[stream], keep[stream] = found
            if missing is not None:
                references.popleft()
                self._count_unpaired(missing)
                continue
            if waiting:
                break
            references.popleft()
            for stream, oldest in keep.items():
                # Older messages can never be a partner of a later frame.
                buffer = self._buffers[stream]
                while buffer and buffer[0][0] < oldest:
                    buffer.popleft()
            self.stats.paired += 1
            self.stats.interpolated += any(isinstance(i, Blend) for i in items.values())
            done.append(PairedFrame(ref_stamp, items, stamps))
        return done
