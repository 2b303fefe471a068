"""Rollout recording: one rosbag2 bag (MCAP) per episode that survives a crash (ROS-free).

Why not the ordinary bag writer: a rollout must stay readable if the policy process is killed
mid-episode, and a flipped byte must be detected rather than trained on. Each episode is one
``sarm2_common.bag_writer.StreamingBagWriter`` in streaming mode: checksummed chunks flushed and
fsynced at least every ``flush_period`` seconds with ``metadata.yaml`` rewritten each time, so a
crash loses at most the last ``flush_period`` of data and what is on disk opens in rosbags,
mcap and rosbag2 without any repair step.
"""

import json
from pathlib import Path

from sarm2_common.bag_writer import StreamingBagWriter


class RolloutRecorder:
    """One ``StreamingBagWriter`` per episode under ``directory/<episode_id>``."""

    def __init__(self, directory: str | Path, typestore, flush_period: float = 1.0):
        self.directory = Path(directory)
        self.typestore = typestore
        self.flush_period = flush_period
        self.writer: StreamingBagWriter | None = None
        self.dropped = 0

    @property
    def recording(self) -> bool:
        return self.writer is not None

    def start(self, episode_id: str, topics: dict[str, str], metadata: dict) -> Path:
        """Open the bag of a new episode; ``topics`` maps topic -> message type."""
        if self.writer is not None:
            self.stop()
        self.directory.mkdir(parents=True, exist_ok=True)
        writer = StreamingBagWriter(self.directory / episode_id, self.typestore,
                                    self.flush_period)
        writer.custom_data['episode_metadata'] = json.dumps(metadata, sort_keys=True)
        for topic, msgtype in topics.items():
            writer.add_connection(topic, msgtype)
        writer.flush()
        self.writer = writer
        return writer.path

    def write(self, topic: str, data: bytes, timestamp: int) -> bool:
        """Record one serialized message; False (and counted) if no bag is open or it failed."""
        if self.writer is None:
            return False
        try:
            self.writer.write(topic, data, timestamp)
        except Exception:  # noqa: BLE001 - a message that cannot be recorded is only counted
            self.dropped += 1
            return False
        return True

    def flush_if_due(self) -> None:
        """Call from the control loop so quiet periods still reach the disk."""
        if self.writer is not None:
            self.writer.flush_if_due()

    def stop(self, metadata: dict | None = None) -> Path | None:
        """Close the current bag (adding final metadata); return its path."""
        writer, self.writer = self.writer, None
        if writer is None:
            return None
        if metadata is not None:
            writer.custom_data['episode_metadata'] = json.dumps(metadata, sort_keys=True)
        writer.close()
        return writer.path
