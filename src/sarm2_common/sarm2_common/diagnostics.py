"""What a node's health report says, ROS-free (``sarm2_common.ros.conversions`` publishes it).

Each node keeps its counters in a monitor of its own and turns them into one
``DiagnosticReport`` per diagnostics period: a level, a one-line message and key/value pairs for
rqt_robot_monitor. The levels are diagnostic_msgs/DiagnosticStatus's.
"""

from dataclasses import dataclass

OK, WARN, ERROR, STALE = 0, 1, 2, 3


@dataclass
class DiagnosticReport:
    """What one diagnostics publication says."""

    level: int
    message: str
    values: dict[str, str]
