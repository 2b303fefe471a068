"""Topic names of the stack, named once (the live graph and the bag layout share them)."""

IMAGE_TOPIC_PREFIX = '/camera/'
IMAGE_TOPIC_SUFFIX = '/image_raw'
JOINT_STATES_TOPIC = '/joint_states'
EPISODE_STATUS_TOPIC = '/episode/status'
STAGE_REWARD_TOPIC = '/sarm2/stage_reward'
DIAGNOSTICS_TOPIC = '/diagnostics'


def image_topic(camera: str) -> str:
    """Return the image topic of ``camera``."""
    return f'{IMAGE_TOPIC_PREFIX}{camera}{IMAGE_TOPIC_SUFFIX}'


def camera_of_topic(topic: str) -> str | None:
    """Return the camera name of an image topic, None for other topics."""
    if topic.startswith(IMAGE_TOPIC_PREFIX) and topic.endswith(IMAGE_TOPIC_SUFFIX):
        name = topic[len(IMAGE_TOPIC_PREFIX):-len(IMAGE_TOPIC_SUFFIX)]
        return name if name and '/' not in name else None
    return None
