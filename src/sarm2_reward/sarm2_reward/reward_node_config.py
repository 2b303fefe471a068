"""Configuration of the live reward node, ROS-free: the node's parameters map one-to-one onto it.

Each field is a parameter (``sarm2_common.node_parameters.parameter``: description, range or
allowed values, when a change applies). The node declares them from this class and validates
every change by building a ``RewardNodeConfig`` with the new value (``__post_init__`` raises
ValueError saying what is wrong), so ROS parameters, the YAML file and tests share one set of
rules.
"""

from dataclasses import dataclass
import re

from sarm2_common.node_parameters import (AT_STARTUP, check_fields, ON_CONFIGURE, parameter,
                                          parameter_names)
from sarm2_common.topics import image_topic

from .backend import BACKENDS
from .lrm.questions import QUESTIONS

SENSOR_RELIABILITIES = ('best_effort', 'reliable')
_DEVICE = re.compile(r'^(cpu|cuda(:\d+)?)$')

@dataclass
class RewardNodeConfig:
    """The reward node's parameters (config/reward_node.yaml documents them by example)."""

    backend: str = parameter('sarm2', 'reward backend: sarm2 (a trained checkpoint) or lrm '
                             '(zero-shot VLM rewards)', choices=tuple(BACKENDS),
                             applies=ON_CONFIGURE)
    checkpoint: str = parameter('', 'SARM2 checkpoint directory (config.json + safetensors)',
                                applies=ON_CONFIGURE)
    device: str = parameter('cpu', 'torch device for inference: cpu, cuda or cuda:N',
                            applies=ON_CONFIGURE)
    torch_threads: int = parameter(1, 'CPU threads for inference (batch of one small model: '
                                   'more threads mostly spin-wait and contend); 0: torch '
                                   'default', low=0, high=256, applies=ON_CONFIGURE)
    cameras: tuple[str, ...] = parameter((), "camera names in model order; empty: the "
                                         "checkpoint's cameras", applies=ON_CONFIGURE)
    camera_topics: tuple[str, ...] = parameter((), 'image topic per camera; empty: '
                                               '/camera/<name>/image_raw', applies=ON_CONFIGURE)
    joint_states_topic: str = parameter('/joint_states', 'sensor_msgs/JointState topic',
                                        applies=ON_CONFIGURE)
    joint_names: tuple[str, ...] = parameter((), 'joints to take from joint_states, in model '
                                             'order; empty: message order')
    stage_gap: int = parameter(0, "frames between stage-window frames; 0: the checkpoint's "
                               '(rescale when the camera rate differs from the training frame '
                               'rate)', low=0, high=1000, applies=ON_CONFIGURE)
    value_gap: int = parameter(0, "frames between value-window frames; 0: the checkpoint's",
                               low=0, high=1000, applies=ON_CONFIGURE)
    smoothing: float = parameter(0.5, 'EMA factor of values before differencing into rewards '
                                 '(the same smoothing offline relabelling uses)', low=0.0,
                                 high=0.999, applies=ON_CONFIGURE)
    output_rate: float = parameter(0.0, 'most frames processed per second (by header stamp); '
                                   '0: every frame', low=0.0, high=10000.0)
    pairing_slop: float = parameter(0.02, 's, largest stamp difference between paired '
                                    'camera/joint messages', low=0.0, high=10.0,
                                    applies=ON_CONFIGURE)
    max_pairing_delay: float = parameter(0.2, 's, how long a frame waits for partners before '
                                         'it is dropped', low=0.001, high=60.0,
                                         applies=ON_CONFIGURE)
    queue_size: int = parameter(2, 'paired frames waiting for the model; older ones are '
                                'dropped and counted', low=1, high=100, applies=ON_CONFIGURE)
    task: str = parameter('', 'task name at startup, until SetTask or EpisodeStatus says '
                          'otherwise', applies=AT_STARTUP)
    instruction: str = parameter('', 'instruction at startup, until SetTask or EpisodeStatus '
                                 'says otherwise', applies=AT_STARTUP)
    sensor_qos_reliability: str = parameter('best_effort', 'camera/joint subscriptions: '
                                            'best_effort or reliable',
                                            choices=SENSOR_RELIABILITIES, applies=ON_CONFIGURE)
    sensor_qos_depth: int = parameter(5, 'history depth of camera/joint subscriptions (the '
                                      'pairing buffers hold as many, at least 16)', low=1,
                                      high=1000, applies=ON_CONFIGURE)
    output_qos_depth: int = parameter(10, 'history depth of the reward, marker and overlay '
                                      'publishers', low=1, high=1000, applies=ON_CONFIGURE)
    overlay_width: int = parameter(256, 'pixels, width of the annotated overlay image', low=96,
                                   high=4096)
    sparkline_length: int = parameter(200, 'rewards shown in the overlay sparkline', low=2,
                                      high=100000)
    marker_frame: str = parameter('', "frame_id of the RViz markers; empty: the camera image's "
                                  'frame_id')
    diagnostics_period: float = parameter(1.0, 's between /diagnostics messages', low=0.05,
                                          high=60.0, applies=AT_STARTUP)
    stale_timeout: float = parameter(1.0, 's without messages before a stream is reported as '
                                     'stale', low=0.01, high=3600.0, applies=ON_CONFIGURE)
    autostart: bool = parameter(False, 'configure and activate at startup instead of waiting '
                                'for lifecycle commands', applies=AT_STARTUP)
    lrm_endpoint: str = parameter('', 'lrm: OpenAI-compatible server URL, e.g. '
                                  'http://gpu-box:8000/v1 (vLLM, SGLang); or set lrm_endpoints '
                                  'or lrm_model_dir', applies=ON_CONFIGURE)
    lrm_endpoints: tuple[str, ...] = parameter(
        (), 'lrm: one server URL per question (contrastive, progress, completion), instead of '
        'lrm_endpoint', applies=ON_CONFIGURE)
    lrm_model: str = parameter('', 'lrm: model name the server serves, for every question',
                               applies=ON_CONFIGURE)
    lrm_models: tuple[str, ...] = parameter(
        (), 'lrm: served model name per question (contrastive, progress, completion), e.g. the '
        'names of three served LoRA adapters; instead of lrm_model', applies=ON_CONFIGURE)
    lrm_model_dir: str = parameter('', 'lrm: local transformers image-text-to-text model '
                                   'directory', applies=ON_CONFIGURE)
    lrm_adapter_dir: str = parameter('', 'lrm: optional LoRA adapter directory for the local '
                                     'model, used for every question', applies=ON_CONFIGURE)
    lrm_adapter_dirs: tuple[str, ...] = parameter(
        (), 'lrm: one LoRA adapter directory per question (contrastive, progress, completion) '
        'for the local model, loaded once and switched per query; instead of lrm_adapter_dir',
        applies=ON_CONFIGURE)
    lrm_query_every: int = parameter(10, 'lrm: frames between VLM queries; the last answer is '
                                     'held in between', low=1, high=100000, applies=ON_CONFIGURE)
    lrm_mode: str = parameter('tri', 'lrm: published reward: tri, contrastive, progress or '
                              'completion', choices=('tri',) + QUESTIONS, applies=ON_CONFIGURE)
    lrm_timeout: float = parameter(30.0, 'lrm: s before a VLM request counts as timed out',
                                   low=0.1, high=3600.0, applies=ON_CONFIGURE)

    def __post_init__(self):
        check_fields(self)
        if not _DEVICE.match(self.device):
            raise ValueError(f'device must be cpu, cuda or cuda:N, got {self.device!r}')
        if len(set(self.cameras)) != len(self.cameras) or any(not c for c in self.cameras):
            raise ValueError(f'cameras must be unique non-empty names, got {list(self.cameras)}')
        if self.camera_topics and len(self.camera_topics) != len(self.cameras):
            raise ValueError(f'camera_topics has {len(self.camera_topics)} entries but cameras '
                             f'has {len(self.cameras)}: give one topic per camera, or none')
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f'joint_names must be unique, got {list(self.joint_names)}')
        if self.backend == 'lrm':
            self._check_lrm()

    def _check_lrm(self) -> None:
        from .lrm.lrm_backend import vlm_source_of

        vlm_source_of(self)        # raises ValueError naming the lrm_* parameters at fault
        if len(self.cameras) != 1:
            raise ValueError('backend lrm asks about one camera view (the published LRM prompts '
                             f'show one image per observation): set cameras to one camera, got '
                             f'{list(self.cameras)}')

    def topic_of(self, camera: str, cameras: list[str]) -> str:
        """Image topic of ``camera`` (one of the resolved ``cameras``)."""
        if self.camera_topics:
            return self.camera_topics[cameras.index(camera)]
        return image_topic(camera)

    @classmethod
    def names(cls) -> list[str]:
        """Parameter names, in declaration order."""
        return parameter_names(cls)
