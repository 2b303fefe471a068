"""Header stamps <-> numbers (nanoseconds or seconds on the stamp's clock)."""

from builtin_interfaces.msg import Time

NS = 1_000_000_000


def stamp_ns(stamp: Time) -> int:
    """Return a builtin_interfaces/Time as integer nanoseconds."""
    return stamp.sec * NS + stamp.nanosec


def stamp_seconds(stamp: Time) -> float:
    """Return a builtin_interfaces/Time as float seconds."""
    return stamp.sec + stamp.nanosec / NS


def time_msg(nanoseconds: int) -> Time:
    """Return integer nanoseconds as a builtin_interfaces/Time."""
    sec, nanosec = divmod(int(nanoseconds), NS)
    return Time(sec=sec, nanosec=nanosec)
