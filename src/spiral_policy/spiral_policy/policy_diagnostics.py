"""Health bookkeeping of the policy node, ROS-free: counters in, one diagnostic report out.

The node counts every event here (control ticks, policy queries, bad observations, faults,
recorder drops) and the diagnostics timer turns the counters, the safety filter's counts and the
node's state into one report for rqt_robot_monitor. Problems are logged once per kind by the
node (``first`` tells it when) and always counted.
"""

from collections import Counter, deque

import numpy as np
from sarm2_common.diagnostics import DiagnosticReport, ERROR, OK, WARN


class PolicyNodeMonitor:
    """Counters and rolling timings of the policy node."""

    def __init__(self, window: int = 2000):
        self.counts: Counter = Counter()
        self._intervals: deque = deque(maxlen=window)     # s between control ticks
        self._inference: deque = deque(maxlen=500)        # s per policy query
        self._logged: set[str] = set()
        self.error = ''                                   # last configure failure

    def count(self, what: str) -> None:
        """Count one event of kind ``what``."""
        self.counts[what] += 1

    def first(self, key: str) -> bool:
        """Return True the first time ``key`` is seen (the node logs it then, once)."""
        if key in self._logged:
            return False
        self._logged.add(key)
        return True

    def tick_interval(self, seconds: float) -> None:
        """Record the time since the previous control tick."""
        self._intervals.append(seconds)

    def inference(self, seconds: float) -> None:
        """Record the duration of one policy query."""
        self._inference.append(seconds)

    def report(self, *, configured: bool, estopped: bool, episode_id: str, policy_id: str,
               control_period: float, safety_counts: dict, recorder_dropped: int
               ) -> DiagnosticReport:
        """Summarise the node's health now."""
        if estopped:
            level, message = ERROR, 'e-stop latched'
        elif not configured:
            level = ERROR if self.error else WARN
            message = f'not configured: {self.error}' if self.error else 'not configured'
        else:
            level, message = OK, 'running episode' if episode_id else 'idle'
        values = {'policy': policy_id, 'episode': episode_id}
        intervals = np.asarray(self._intervals)
        if intervals.size:
            jitter = np.abs(intervals - control_period) * 1000.0
            values['jitter_p50_ms'] = f'{np.percentile(jitter, 50):.2f}'
            values['jitter_p99_ms'] = f'{np.percentile(jitter, 99):.2f}'
        if self._inference:
            values['inference_p50_ms'] = f'{np.median(self._inference) * 1000:.1f}'
        counts = dict(self.counts)
        counts.update({f'safety_{k}': v for k, v in safety_counts.items()})
        counts['recorder_dropped'] = recorder_dropped
        values.update({k: str(v) for k, v in sorted(counts.items())})
        if self.error:
            values['last_error'] = self.error
        return DiagnosticReport(level, message, values)
