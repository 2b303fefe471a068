"""QoS profiles of the whole stack, named once (STYLE rule 9).

- sensor data (cameras, joint states): best effort, keep last few; a late frame is worthless.
- reliable: rewards, commands, status streams that consumers must not miss.
- latched: transient local, depth 1, for task/model information a late joiner needs.
"""

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

SENSOR_DATA = qos_profile_sensor_data
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      history=HistoryPolicy.KEEP_LAST)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     history=HistoryPolicy.KEEP_LAST)
