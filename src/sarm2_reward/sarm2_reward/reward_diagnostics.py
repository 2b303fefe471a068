"""Health bookkeeping of the live reward node, ROS-free: counters in, one diagnostic report out.

The node counts every event (frame processed, frame dropped, bad input, stream heard from) here;
the diagnostics timer turns the counters into a level, a one-line message and key/value pairs
for rqt_robot_monitor. Bad inputs are logged once per kind by the node and always counted here.

A *frame* is one message of the reference stream (the first camera); every frame received ends
in exactly one place, so the report satisfies
``received_frames = processed_frames + dropped_frames + unpaired_frames + bad_frames
+ pending_frames`` (pending: waiting for partners or for the model; 0 once input stops):

- processed: a StageReward was published for it;
- dropped, by reason (``dropped.<reason>``): ``superseded`` (DDS replaced it with a newer frame
  before the node took it: a gap in the publisher's sequence numbers; with best-effort QoS a
  frame lost on the way leaves the same gap), ``queue`` (a newer paired frame pushed it out of
  the queue while the model was busy), ``rate_limit`` (``output_rate``), ``reset`` (a new
  episode, a restarted timeline or a deactivation discarded it), ``inactive`` (it arrived while
  the node was configured but not active);
- unpaired: no partner from another stream (see ``stamp_pairing``);
- bad: its own or a partner's message could not be used (``bad_input.<kind>`` says why).
"""

from collections import Counter, deque
import threading
import time

import numpy as np
from sarm2_common.diagnostics import DiagnosticReport, ERROR, OK, STALE, WARN

DROP_REASONS = ('superseded', 'queue', 'rate_limit', 'reset', 'inactive')
# Drops that mean the model is slower than the cameras (the others were asked for).
BUSY_REASONS = ('superseded', 'queue')


class RewardNodeMonitor:
    """Counters and rolling timings of the reward node (counters are safe to update from threads).

    ``streams[0]`` is the reference stream whose messages are the frames. Times are wall-clock
    monotonic seconds (rates and staleness are about the machine, not the possibly simulated
    ROS clock); latencies are passed in by the node in seconds.
    """

    def __init__(self, streams: list[str], window: int = 300, stale_after: float = 1.0,
                 clock=time.monotonic):
        self.streams = list(streams)
        self.stale_after = stale_after
        self._clock = clock
        self.started = clock()
        self.processed = 0
        self.dropped_by: Counter = Counter()
        self.bad_frames = 0
        self.bad_inputs: Counter = Counter()
        self._warned: set[str] = set()
        self._count_lock = threading.Lock()
        self.last_heard: dict[str, float | None] = dict.fromkeys(streams)
        self.received: Counter = Counter()
        self._done_times: deque = deque(maxlen=window)
        self._latencies: deque = deque(maxlen=window)
        self._inference: deque = deque(maxlen=window)
        # Seconds spent on frames (decode, model, publish) since the last report: with the
        # wall time between reports, how busy the node's thread is (100%: model-bound).
        self._busy = 0.0
        self._busy_since = clock()
        self.state = 'unconfigured'
        self.model_id = ''
        self.device = ''
        self.error = ''
        self.episode_id = ''
        self.frame_index = 0

    def heard(self, stream: str, count: int = 1) -> None:
        """Record that ``stream`` delivered ``count`` messages now."""
        self.last_heard[stream] = self._clock()
        with self._count_lock:
            self.received[stream] += count

    def first_warning(self, key: str) -> bool:
        """Return True the first time ``key`` is seen (the node logs a warning then, once)."""
        if key in self._warned:
            return False
        self._warned.add(key)
        return True

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` frames dropped for ``reason`` (one of ``DROP_REASONS``)."""
        if reason not in DROP_REASONS:
            raise ValueError(f'unknown drop reason {reason!r}; one of {DROP_REASONS}')
        with self._count_lock:
            self.dropped_by[reason] += count

    def bad_input(self, kind: str, costs_frame: bool = True) -> bool:
        """Count one bad input of ``kind`` (and the frame it cost, if any).

        Return True the first time of a kind (the node logs it then).
        """
        with self._count_lock:
            self.bad_inputs[kind] += 1
            self.bad_frames += costs_frame
            return self.bad_inputs[kind] == 1

    def busy(self, seconds: float) -> None:
        """Record ``seconds`` of work on one frame (processed or not)."""
        self._busy += seconds

    def frame_done(self, latency: float, inference_time: float) -> None:
        """Record a published frame: latency from image stamp to publication, model time."""
        with self._count_lock:
            self.processed += 1
        self._done_times.append(self._clock())
        self._latencies.append(latency)
        self._inference.append(inference_time)

    def rate_hz(self) -> float:
        """Return processed frames per second over the recent window (0 when idle)."""
        if len(self._done_times) < 2 or self._clock() - self._done_times[-1] > self.stale_after:
            return 0.0
        span = self._done_times[-1] - self._done_times[0]
        return (len(self._done_times) - 1) / span if span > 0 else 0.0

    def stale_streams(self) -> list[str]:
        """Streams never heard from, or silent for longer than ``stale_after``."""
        now = self._clock()
        return [s for s, t in self.last_heard.items() if t is None or now - t > self.stale_after]

    def reset_timings(self) -> None:
        """Forget rate/latency history (a new configuration)."""
        self._done_times.clear()
        self._latencies.clear()
        self._inference.clear()

    def report(self, pairing_stats=None, pending: int = 0) -> DiagnosticReport:
        """Summarise the node's health now.

        ``pairing_stats`` (``stamp_pairing.PairingStats``) adds the frames the pairer dropped:
        unpaired, discarded by a reset, and reference stamps that went backwards (bad frames);
        ``pending`` is how many frames wait in the pairer, the queue or the model.
        """
        latencies = np.asarray(self._latencies, dtype=np.float64) * 1000.0
        inference = np.asarray(self._inference, dtype=np.float64) * 1000.0
        stale = self.stale_streams()
        values = {
            'state': self.state,
            'model_id': self.model_id,
            'device': self.device,
            'episode_id': self.episode_id,
            'frame_index': str(self.frame_index),
            'processed_frames': str(self.processed),
            'rate_hz': f'{self.rate_hz():.2f}',
            'latency_p50_ms': f'{np.percentile(latencies, 50):.2f}' if latencies.size else 'n/a',
            'latency_p99_ms': f'{np.percentile(latencies, 99):.2f}' if latencies.size else 'n/a',
            'inference_mean_ms': f'{inference.mean():.2f}' if inference.size else 'n/a',
            'busy_percent': f'{self._busy_percent():.1f}',
            'bad_inputs': str(sum(self.bad_inputs.values())),
            'stale_streams': ','.join(stale),
            'last_error': self.error,
        }
        for kind, count in sorted(self.bad_inputs.items()):
            values[f'bad_input.{kind}'] = str(count)
        for stream in self.streams:
            values[f'received.{stream}'] = str(self.received[stream])
        values.update(self._frame_accounting(pairing_stats, pending))
        if pairing_stats is not None:
            values['interpolated_frames'] = str(pairing_stats.interpolated)
            values['backwards_stamps'] = str(pairing_stats.backwards)
            values['timeline_resets'] = str(pairing_stats.timeline_resets)
        level, message = self._level(stale)
        return DiagnosticReport(level, message, values)

    def _busy_percent(self) -> float:
        now = self._clock()
        span, busy = now - self._busy_since, self._busy
        self._busy, self._busy_since = 0.0, now
        return 100.0 * busy / span if span > 0 else 0.0

    def _frame_accounting(self, stats, pending: int) -> dict[str, str]:
        dropped = Counter(self.dropped_by)
        bad = self.bad_frames
        unpaired = 0
        if stats is not None and self.streams:
            dropped['reset'] += stats.discarded
            bad += stats.backwards_by_stream.get(self.streams[0], 0)
            unpaired = stats.unpaired
        values = {
            'received_frames': str(self.received[self.streams[0]] if self.streams else 0),
            'dropped_frames': str(sum(dropped.values())),
            'unpaired_frames': str(unpaired),
            'bad_frames': str(bad),
            'pending_frames': str(pending),
        }
        values.update({f'dropped.{reason}': str(dropped[reason]) for reason in DROP_REASONS})
        return values

    def _level(self, stale: list[str]) -> tuple[int, str]:
        if self.error and self.state != 'active':
            return ERROR, f'{self.state}: {self.error}'
        if self.state != 'active':
            return OK, f'{self.state}: waiting for activation'
        problems = []
        if stale:
            problems.append(f'no data from {", ".join(stale)}')
        if self.bad_inputs:
            problems.append(f'{sum(self.bad_inputs.values())} bad inputs '
                            f'({", ".join(sorted(self.bad_inputs))})')
        busy = sum(self.dropped_by[reason] for reason in BUSY_REASONS)
        if busy:
            problems.append(f'{busy} frames dropped (model slower than cameras)')
        if stale:
            return STALE if len(stale) == len(self.streams) else WARN, '; '.join(problems)
        if self.bad_inputs:
            return WARN, '; '.join(problems)
        message = f'active, {self.rate_hz():.1f} Hz'
        if busy:
            message += f'; {problems[-1]}'
        return OK, message
