"""Health bookkeeping of the live reward node, ROS-free: counters in, one diagnostic report out.

The node counts every event (frame processed, frame dropped, bad input, stream heard from) here;
the diagnostics timer turns the counters into a level, a one-line message and key/value pairs
for rqt_robot_monitor. Bad inputs are logged once per kind by the node and always counted here.
"""

from collections import Counter, deque
import time

import numpy as np
from sarm2_common.diagnostics import DiagnosticReport, ERROR, OK, STALE, WARN


class RewardNodeMonitor:
    """Counters and rolling timings of the reward node; thread-safe enough for counters.

    Times are wall-clock monotonic seconds (rates and staleness are about the machine, not the
    possibly simulated ROS clock); latencies are passed in by the node in seconds.
    """

    def __init__(self, streams: list[str], window: int = 300, stale_after: float = 1.0,
                 clock=time.monotonic):
        self.streams = list(streams)
        self.stale_after = stale_after
        self._clock = clock
        self.started = clock()
        self.processed = 0
        self.dropped = 0
        self.rate_skipped = 0
        self.bad_inputs: Counter = Counter()
        self._warned: set[str] = set()
        self.last_heard: dict[str, float | None] = dict.fromkeys(streams)
        self.received: Counter = Counter()
        self._done_times: deque = deque(maxlen=window)
        self._latencies: deque = deque(maxlen=window)
        self._inference: deque = deque(maxlen=window)
        self.state = 'unconfigured'
        self.model_id = ''
        self.device = ''
        self.error = ''
        self.episode_id = ''
        self.frame_index = 0

    def heard(self, stream: str) -> None:
        """Record that ``stream`` delivered a message now."""
        self.last_heard[stream] = self._clock()
        self.received[stream] += 1

    def first_warning(self, key: str) -> bool:
        """Return True the first time ``key`` is seen (the node logs a warning then, once)."""
        if key in self._warned:
            return False
        self._warned.add(key)
        return True

    def bad_input(self, kind: str) -> bool:
        """Count one bad input of ``kind``; return True the first time (the node logs it then)."""
        self.bad_inputs[kind] += 1
        return self.bad_inputs[kind] == 1

    def frame_done(self, latency: float, inference_time: float) -> None:
        """Record a published frame: latency from image stamp to publication, model time."""
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

    def report(self, pairing_stats=None) -> DiagnosticReport:
        """Summarise the node's health now."""
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
            'dropped_frames': str(self.dropped),
            'rate_limited_frames': str(self.rate_skipped),
            'bad_inputs': str(sum(self.bad_inputs.values())),
            'stale_streams': ','.join(stale),
            'last_error': self.error,
        }
        for kind, count in sorted(self.bad_inputs.items()):
            values[f'bad_input.{kind}'] = str(count)
        for stream in self.streams:
            values[f'received.{stream}'] = str(self.received[stream])
        if pairing_stats is not None:
            values['unpaired_frames'] = str(pairing_stats.unpaired)
            values['backwards_stamps'] = str(pairing_stats.backwards)
            values['timeline_resets'] = str(pairing_stats.timeline_resets)
        level, message = self._level(stale)
        return DiagnosticReport(level, message, values)

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
        if self.dropped:
            problems.append(f'{self.dropped} frames dropped (model slower than cameras)')
        if stale:
            return STALE if len(stale) == len(self.streams) else WARN, '; '.join(problems)
        if self.bad_inputs:
            return WARN, '; '.join(problems)
        message = f'active, {self.rate_hz():.1f} Hz'
        if self.dropped:
            message += f'; {problems[-1]}'
        return OK, message
