"""QoS profiles of the whole stack, named once (STYLE rule 9).

- sensor data (cameras, joint states): best effort, keep last few; a late frame is worthless.
  Large camera frames need reliable delivery, though (``sensor_qos``): measured here over
  UDPv4, shared memory and Fast DDS's LARGE_DATA mode alike, a best-effort subscriber received
  1-9 of 50 640x480 rgb8 frames at 10 Hz, a reliable one every frame of 640x480 and 1280x720 at
  30 Hz (a reliable subscription needs a reliable publisher; most camera drivers are).
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


def sensor_qos(reliability: str, depth: int) -> QoSProfile:
    """Sensor-data QoS with the given reliability (``best_effort`` | ``reliable``) and depth."""
    return QoSProfile(depth=depth, history=SENSOR_DATA.history,
                      durability=SENSOR_DATA.durability,
                      reliability=ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                      else ReliabilityPolicy.BEST_EFFORT)
