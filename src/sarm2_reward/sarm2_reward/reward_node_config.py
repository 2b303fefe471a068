"""Configuration of the live reward node, ROS-free: the node's parameters map one-to-one onto it.

The node validates every parameter change by building a ``RewardNodeConfig`` with the new value
(``__post_init__`` raises ValueError saying what is wrong), so ROS parameters, the YAML file and
tests share one set of rules. ``PARAMETER_DOCS`` are the parameter descriptions.
"""

from dataclasses import dataclass, fields
import re

from .backend import BACKENDS

SENSOR_RELIABILITIES = ('best_effort', 'reliable')
_DEVICE = re.compile(r'^(cpu|cuda(:\d+)?)$')

PARAMETER_DOCS = {
    'backend': 'reward backend: sarm2 (a trained checkpoint) or lrm (zero-shot VLM rewards); '
               'on configure',
    'checkpoint': 'SARM2 checkpoint directory (config.json + safetensors); loaded on configure',
    'device': 'torch device for inference: cpu, cuda or cuda:N (applied on configure)',
    'torch_threads': 'CPU threads for inference (batch of one small model: more threads mostly '
                     'spin-wait and contend); 0: torch default (on configure)',
    'cameras': "camera names in model order; empty: the checkpoint's cameras (on configure)",
    'camera_topics': 'image topic per camera; empty: /camera/<name>/image_raw (on configure)',
    'joint_states_topic': 'sensor_msgs/JointState topic (on configure)',
    'joint_names': 'joints to take from joint_states, in model order; empty: message order',
    'stage_gap': "frames between stage-window frames; 0: the checkpoint's (rescale when the "
                 'camera rate differs from the training frame rate; on configure)',
    'value_gap': "frames between value-window frames; 0: the checkpoint's (on configure)",
    'smoothing': 'EMA factor of values before differencing into rewards, 0..<1 (on configure)',
    'output_rate': 'most frames processed per second (by header stamp); 0: every frame',
    'pairing_slop': 's, largest stamp difference between a frame and the nearest message of '
                    'another camera, or its joint state when none can be interpolated',
    'joint_interpolation_gap': 's, joint states at most this far apart that bracket a frame '
                               'are interpolated to its stamp; otherwise the nearest one within '
                               'max(pairing_slop, half this gap) is used (on configure)',
    'fresh_joint_age': 's, a joint state at most this much older than a frame is used without '
                       'waiting for the next one to interpolate (a fast arm: the state changes '
                       'little in that time); 0: always wait (on configure)',
    'max_pairing_delay': 's, how long a frame waits for partners before it is decided with '
                         'what has arrived',
    'queue_size': 'paired frames waiting for the model; older ones are dropped and counted',
    'task': 'task name at startup, until SetTask or EpisodeStatus says otherwise',
    'instruction': 'instruction at startup, until SetTask or EpisodeStatus says otherwise',
    'sensor_qos_reliability': 'camera/joint subscriptions: best_effort or reliable',
    'sensor_qos_depth': 'history depth of the camera subscriptions (1: DDS replaces a frame '
                        'the model had no time for; counted); joint states keep at least 20 '
                        '(on configure)',
    'output_qos_depth': 'history depth of the reward, marker and overlay publishers',
    'overlay_width': 'pixels, width of the annotated overlay image',
    'sparkline_length': 'rewards shown in the overlay sparkline',
    'marker_frame': "frame_id of the RViz markers; empty: the camera image's frame_id",
    'diagnostics_period': 's between /diagnostics messages',
    'stale_timeout': 's without messages before a stream is reported as stale',
    'autostart': 'configure and activate at startup instead of waiting for lifecycle commands',
    'lrm_endpoint': 'lrm: OpenAI-compatible server URL, e.g. http://gpu-box:8000/v1 (vLLM, '
                    'SGLang); or set lrm_model_dir (on configure)',
    'lrm_model': 'lrm: model name the server serves (on configure)',
    'lrm_model_dir': 'lrm: local transformers image-text-to-text model directory (on configure)',
    'lrm_adapter_dir': 'lrm: optional LoRA adapter directory for the local model (on configure)',
    'lrm_query_every': 'lrm: frames between VLM queries; the last answer is held in between',
    'lrm_mode': 'lrm: published reward: tri, contrastive, progress or completion (on configure)',
    'lrm_timeout': 'lrm: s before a VLM request counts as timed out (on configure)',
}
# Parameters that only take effect on the next configure (documented in PARAMETER_DOCS).
APPLIED_ON_CONFIGURE = ('backend', 'checkpoint', 'device', 'torch_threads', 'smoothing', 'cameras',
                        'camera_topics', 'joint_states_topic', 'stage_gap', 'value_gap',
                        'sensor_qos_reliability', 'sensor_qos_depth', 'output_qos_depth',
                        'queue_size', 'pairing_slop', 'joint_interpolation_gap', 'fresh_joint_age',
                        'max_pairing_delay', 'stale_timeout',
                        'lrm_endpoint', 'lrm_model', 'lrm_model_dir', 'lrm_adapter_dir',
                        'lrm_query_every', 'lrm_mode', 'lrm_timeout')
# Parameters fixed at startup (set them on the command line or in the YAML file).
READ_ONLY = ('autostart', 'diagnostics_period', 'task', 'instruction')


@dataclass
class RewardNodeConfig:
    backend: str = 'sarm2'
    checkpoint: str = ''
    device: str = 'cpu'
    torch_threads: int = 1
    cameras: tuple[str, ...] = ()
    camera_topics: tuple[str, ...] = ()
    joint_states_topic: str = '/joint_states'
    joint_names: tuple[str, ...] = ()
    stage_gap: int = 0
    value_gap: int = 0
    smoothing: float = 0.5
    output_rate: float = 0.0
    pairing_slop: float = 0.02
    joint_interpolation_gap: float = 0.2
    fresh_joint_age: float = 0.01
    max_pairing_delay: float = 0.2
    queue_size: int = 2
    task: str = ''
    instruction: str = ''
    sensor_qos_reliability: str = 'best_effort'
    sensor_qos_depth: int = 1
    output_qos_depth: int = 10
    overlay_width: int = 256
    sparkline_length: int = 200
    marker_frame: str = ''
    diagnostics_period: float = 1.0
    stale_timeout: float = 1.0
    autostart: bool = False
    lrm_endpoint: str = ''
    lrm_model: str = ''
    lrm_model_dir: str = ''
    lrm_adapter_dir: str = ''
    lrm_query_every: int = 10
    lrm_mode: str = 'tri'
    lrm_timeout: float = 10.0

    def __post_init__(self):
        self.cameras = tuple(self.cameras)
        self.camera_topics = tuple(self.camera_topics)
        self.joint_names = tuple(self.joint_names)
        if self.backend not in BACKENDS:
            raise ValueError(f'backend must be one of {", ".join(BACKENDS)}, got '
                             f'{self.backend!r}')
        if not _DEVICE.match(self.device):
            raise ValueError(f'device must be cpu, cuda or cuda:N, got {self.device!r}')
        if len(set(self.cameras)) != len(self.cameras) or any(not c for c in self.cameras):
            raise ValueError(f'cameras must be unique non-empty names, got {list(self.cameras)}')
        if self.camera_topics and len(self.camera_topics) != len(self.cameras):
            raise ValueError(f'camera_topics has {len(self.camera_topics)} entries but cameras '
                             f'has {len(self.cameras)}: give one topic per camera, or none')
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f'joint_names must be unique, got {list(self.joint_names)}')
        for name in ('stage_gap', 'value_gap', 'torch_threads'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0 (0: the default), got '
                                 f'{getattr(self, name)}')
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f'smoothing must be in [0, 1), got {self.smoothing}')
        positive = {'pairing_slop': True, 'joint_interpolation_gap': True, 'fresh_joint_age': True,
                    'max_pairing_delay': False, 'output_rate': True,
                    'diagnostics_period': False, 'stale_timeout': False}
        for name, zero_ok in positive.items():
            value = getattr(self, name)
            if value < 0 or (value == 0 and not zero_ok):
                raise ValueError(f'{name} must be {">= 0" if zero_ok else "> 0"}, got {value}')
        for name, low in (('queue_size', 1), ('sensor_qos_depth', 1), ('output_qos_depth', 1),
                          ('overlay_width', 96), ('sparkline_length', 2)):
            if getattr(self, name) < low:
                raise ValueError(f'{name} must be >= {low}, got {getattr(self, name)}')
        if self.backend == 'lrm':
            self._check_lrm()
        if self.sensor_qos_reliability not in SENSOR_RELIABILITIES:
            raise ValueError(f'sensor_qos_reliability must be one of {SENSOR_RELIABILITIES}, '
                             f'got {self.sensor_qos_reliability!r}')

    def _check_lrm(self) -> None:
        if bool(self.lrm_endpoint) == bool(self.lrm_model_dir):
            raise ValueError('backend lrm needs exactly one of lrm_endpoint (a served VLM) or '
                             'lrm_model_dir (a local model directory)')
        if self.lrm_endpoint and not self.lrm_model:
            raise ValueError('backend lrm with lrm_endpoint needs lrm_model (the served name)')
        if not self.cameras:
            raise ValueError('backend lrm has no checkpoint to take cameras from: set cameras')
        if self.lrm_query_every < 1 or self.lrm_timeout <= 0:
            raise ValueError('lrm_query_every must be >= 1 and lrm_timeout > 0, got '
                             f'{self.lrm_query_every} and {self.lrm_timeout}')
        from .lrm.lrm_backend import MODES

        if self.lrm_mode not in MODES:
            raise ValueError(f'lrm_mode must be one of {", ".join(MODES)}, got {self.lrm_mode!r}')

    def topic_of(self, camera: str, cameras: list[str]) -> str:
        """Image topic of ``camera`` (one of the resolved ``cameras``)."""
        if self.camera_topics:
            return self.camera_topics[cameras.index(camera)]
        return f'/camera/{camera}/image_raw'

    @classmethod
    def names(cls) -> list[str]:
        """Parameter names, in declaration order."""
        return [f.name for f in fields(cls)]
