"""Parameters of the bag player node, ROS-free (the node declares them from this class)."""

from dataclasses import dataclass

from sarm2_common.bag_playback import PlaybackConfig
from sarm2_common.node_parameters import AT_STARTUP, check_fields, parameter, parameter_names


@dataclass
class BagPlayerConfig:
    """How one bag is replayed onto live topics."""

    bag: str = parameter('', 'rosbag2 bag directory (or .mcap file) to play', applies=AT_STARTUP)
    rate: float = parameter(1.0, 'playback speed factor (2.0 = twice as fast)', low=0.01,
                            high=100.0, applies=AT_STARTUP)
    loop: bool = parameter(False, 'start again at the end', applies=AT_STARTUP)
    topics: tuple[str, ...] = parameter((), 'topics to play; empty: the sensor topics only '
                                        '(images, joint states, poses)', applies=AT_STARTUP)
    publish_commands: tuple[str, ...] = parameter(
        (), 'command topics (twists, trajectories, gripper) that may be replayed: without '
        'them no recorded command reaches a live arm', applies=AT_STARTUP)
    publish_clock: bool = parameter(False, 'publish the recorded time on /clock (for '
                                    'use_sim_time)', applies=AT_STARTUP)
    start_delay: float = parameter(1.0, 's to wait before the first message, so subscribers '
                                   'can connect', low=0.0, high=60.0, applies=AT_STARTUP)
    wait_for_subscribers: int = parameter(0, 'before playing, wait (up to 30 s) until the '
                                          'played topics have this many subscribers (topics '
                                          'nobody subscribes to are given up 2 s after the '
                                          'first one is matched); 0: do not wait', low=0,
                                          high=100, applies=AT_STARTUP)

    def __post_init__(self):
        check_fields(self)
        if not self.bag:
            raise ValueError('parameter "bag" is empty: pass the bag directory to play')

    def playback(self) -> PlaybackConfig:
        """Return the schedule settings of this replay."""
        return PlaybackConfig(rate=self.rate, loop=self.loop)

    @classmethod
    def names(cls) -> list[str]:
        """Parameter names, in declaration order."""
        return parameter_names(cls)
