"""Write training ``Episode``s as demonstration-layout rosbag2 bags (the ``bag_io`` topics)."""

from pathlib import Path

import numpy as np
from sarm2_common import bag_io, topics
from sarm2_common.vocabulary import PRIMITIVES

PERIOD_NS = 100_000_000     # 10 frames per second, like the synthetic episodes' timestamps


def write_episode_bag(path: Path, episode, period_ns: int = PERIOD_NS) -> Path:
    """Write ``episode`` as one bag: every stream stamped and logged on the frame's time."""
    joints = tuple(f'j{i}' for i in range(episode.joint_positions.shape[1]))
    with bag_io.BagWriter(path) as bag:
        bag.write(bag_io.METADATA_TOPIC, bag_io.metadata_message(
            0, bag_io.METADATA_START, episode.episode_id, episode.task, episode.instruction,
            7), 0)
        for k in range(len(episode)):
            stamp = k * period_ns
            for camera in episode.cameras:
                bag.write(topics.image_topic(camera), bag_io.image_message(
                    episode.images[camera][k], stamp, camera), stamp)
            bag.write(topics.JOINT_STATES_TOPIC, bag_io.joint_state_message(
                joints, episode.joint_positions[k], stamp), stamp)
            label = int(episode.primitive_ids[k])
            if label >= 0:
                bag.write(bag_io.GROUND_TRUTH_TOPIC, bag_io.ground_truth_message(
                    stamp, episode.task, episode.episode_id, k, False, label, PRIMITIVES[label],
                    0.0), stamp)
            bag.write(bag_io.ACTION_TOPIC, bag_io.action_message(episode.actions[k]), stamp)
        end = (len(episode) - 1) * period_ns
        bag.write(bag_io.METADATA_TOPIC, bag_io.metadata_message(
            end, bag_io.METADATA_END, episode.episode_id, episode.task, episode.instruction, 7,
            success=episode.success, reason='success' if episode.success else 'step_limit',
            steps=len(episode)), end)
    return path


def write_episode_bags(root: Path, episodes) -> list[Path]:
    """One bag per episode under ``root``, named so their sorted order is the list order."""
    return [write_episode_bag(Path(root) / f'episode_{i:04d}', e)
            for i, e in enumerate(episodes)]


def frame_error(decoded: np.ndarray, original: np.ndarray) -> float:
    """Mean absolute pixel difference of two uint8 frame stacks."""
    return float(np.abs(decoded.astype(np.int16) - original.astype(np.int16)).mean())
