"""The simulated arm: a Meta-World task on MuJoCo with fast CPU rendering and a labelled expert.

Everything a real arm and its camera drivers would give (images, joint positions) comes out of
``reset``/``step``; the simulator's own knowledge (success, the expert's phase, shaped reward) is
kept apart in ``StepInfo``, which only evaluation code may read.

Units: actions are Meta-World's normalized end-effector velocity commands (-1..1 per axis; 1 is
``max_linear_speed`` m/s) and a gripper command (-1 open .. 1 close). One ``step`` advances
``control_period`` seconds of simulated time. Joint positions are the 7 arm joints in rad and the
2 finger slides in m.
"""

from dataclasses import dataclass, field
import functools
import warnings

import metaworld
import mujoco
import numpy as np

from sarm2_common.catalogue import load_catalogue, TaskSpec
from sarm2_sim.experts import ScriptedExpert

# Cameras defined in every Meta-World v3 scene.
CAMERAS = ('topview', 'corner', 'corner2', 'corner3', 'corner4', 'behindGripper', 'gripperPOV')
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 1024
ACTION_SIZE = 4
ARM_JOINTS = 7
JOINT_COUNT = ARM_JOINTS + 2


@dataclass
class SimArmConfig:
    """What to simulate and render; validated on construction."""

    task: str
    cameras: tuple[str, ...] = ('corner',)
    image_size: int = 64
    seed: int = 0
    max_steps: int = 200
    catalogue_path: str = ''

    def __post_init__(self):
        catalogue = load_catalogue(self.catalogue_path or None)
        if self.task not in catalogue:
            raise ValueError(f'unknown task {self.task!r}; the catalogue has: '
                             f'{", ".join(catalogue)}')
        self.cameras = tuple(self.cameras)
        unknown = [camera for camera in self.cameras if camera not in CAMERAS]
        if unknown or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f'cameras {list(self.cameras)} must be distinct names from: '
                             f'{", ".join(CAMERAS)}')
        if not MIN_IMAGE_SIZE <= int(self.image_size) <= MAX_IMAGE_SIZE:
            raise ValueError(f'image_size {self.image_size} px is impossible; use '
                             f'{MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}')
        if self.max_steps < 1:
            raise ValueError(f'max_steps must be >= 1, got {self.max_steps}')


@dataclass
class Observation:
    """What a real arm and its cameras report."""

    images: dict[str, np.ndarray]
    joint_positions: np.ndarray
    step: int


@dataclass
class StepInfo:
    """Simulator ground truth for one step: for evaluation and labels only."""

    success: bool
    primitive: str
    sim_reward: float
    truncated: bool = False
    expert_finished: bool = False


@dataclass
class _FastRenderer:
    """One offscreen renderer for all cameras, with the costly visual effects switched off."""

    model: mujoco.MjModel
    size: int
    cameras: tuple[str, ...]
    upside_down: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self):
        visual = self.model.vis
        visual.global_.offwidth = max(visual.global_.offwidth, self.size)
        visual.global_.offheight = max(visual.global_.offheight, self.size)
        # Multisampling, shadows and reflections cost ~10x the time at these image sizes and
        # add nothing a 64 px policy can use. The skybox (the grey backdrop) costs as much as
        # the rest of the scene on a software renderer; without it the background is black.
        visual.quality.offsamples = 0
        self.renderer = mujoco.Renderer(self.model, self.size, self.size)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX):
            self.renderer.scene.flags[flag] = 0

    def orient(self, data: mujoco.MjData) -> None:
        """Note which cameras look upside down (their image-up axis points at the floor)."""
        for camera in self.cameras:
            xmat = data.cam(camera).xmat.reshape(3, 3)
            self.upside_down[camera] = bool(xmat[2, 1] < 0.0)

    def render(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        images = {}
        for camera in self.cameras:
            self.renderer.update_scene(data, camera=camera)
            image = self.renderer.render()
            if self.upside_down[camera]:
                image = np.ascontiguousarray(image[::-1, ::-1])
            images[camera] = image
        return images

    def close(self) -> None:
        self.renderer.close()


@functools.lru_cache(maxsize=None)
def _metaworld_task(task: str) -> tuple[type, metaworld.Task]:
    """Meta-World's environment class and a task object for ``task`` (built once per process).

    MT1 samples 50 variations (~1 s); only the first one's settings (observable goal etc.) are
    used, since every reset samples its own positions.
    """
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        benchmark = metaworld.MT1(task, seed=0)
    return benchmark.train_classes[task], benchmark.train_tasks[0]


class SimArm:
    """One Meta-World task with a scripted, primitive-labelled expert; seedable resets."""

    def __init__(self, config: SimArmConfig):
        self.config = config
        self.spec: TaskSpec = load_catalogue(config.catalogue_path or None)[config.task]
        env_class, task = _metaworld_task(config.task)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            self._env = env_class()
            self._env.set_task(task)
        # Episodes are seeded here, not drawn from MT1's 50 fixed variations: every reset(seed)
        # samples object and goal positions from the environment's own seeded generator.
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        # max_steps is enforced by the caller through StepInfo.truncated, not by exceptions.
        self._env.max_path_length = np.iinfo(np.int32).max
        self._expert = ScriptedExpert(self.spec)
        self._seeds = np.random.default_rng(config.seed)
        self._renderer = (_FastRenderer(self._env.model, int(config.image_size), config.cameras)
                          if config.cameras else None)
        self.joint_names: tuple[str, ...] = tuple(
            self._env.model.joint(i).name for i in range(JOINT_COUNT))
        self.control_period = float(self._env.frame_skip * self._env.model.opt.timestep)
        self.max_linear_speed = float(self._env.action_scale / self.control_period)
        self.episode_seed = -1
        self.step_count = 0
        self._raw_observation: np.ndarray | None = None
        self._expert_cache: tuple[np.ndarray, str] | None = None
        self._success = False

    @property
    def instruction(self) -> str:
        return self.spec.instruction

    @property
    def success(self) -> bool:
        """The simulator's success flag after the latest step."""
        return self._success

    @property
    def expert_finished(self) -> bool:
        """The task succeeded and the expert finished its script (including any release)."""
        return self._expert.finished

    def reset(self, seed: int | None = None) -> Observation:
        """Start a new episode; ``seed`` fixes object and goal positions (None: next seed)."""
        if seed is None:
            seed = int(self._seeds.integers(0, 2**31 - 1))
        self.episode_seed = int(seed)
        self._env.seed(self.episode_seed)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            observation, _ = self._env.reset()
        if self.spec.goal_on_table:
            observation = self._lower_goal(observation)
        # Meta-World's reset leaves derived quantities (poses the renderer draws) from before its
        # last state change, so without a forward pass the first image of an episode shows
        # traces of the previous one and runs stop being reproducible.
        mujoco.mj_forward(self._env.model, self._env.data)
        if self._renderer is not None and not self._renderer.upside_down:
            self._renderer.orient(self._env.data)
        self.step_count = 0
        self._success = False
        self._expert.reset()
        self._raw_observation = observation
        self._expert_cache = self._expert.act(observation)
        return self._observation()

    def step(self, action: np.ndarray, render: bool = True) -> tuple[Observation, StepInfo]:
        """Apply one action (float [4], each -1..1; values outside are clipped).

        ``render=False`` skips the cameras (``images`` is empty): a node publishing images at a
        lower rate than it steps renders only when it publishes (``render()``).
        """
        if self._raw_observation is None:
            raise RuntimeError('call reset() before step()')
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_SIZE,) or not np.all(np.isfinite(action)):
            raise ValueError(f'action must be {ACTION_SIZE} finite numbers, got {action!r}')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            observation, reward, _, _, info = self._env.step(np.clip(action, -1.0, 1.0))
        self.step_count += 1
        self._success = bool(info['success'])
        self._expert.observe(self._success)
        self._raw_observation = observation
        self._expert_cache = self._expert.act(observation)
        step_info = StepInfo(success=self._success, primitive=self._expert_cache[1],
                             sim_reward=float(reward),
                             truncated=self.step_count >= self.config.max_steps,
                             expert_finished=self._expert.finished)
        return self._observation(render), step_info

    def expert_action(self) -> tuple[np.ndarray, str]:
        """Return the scripted expert's action for the current state and its primitive name."""
        if self._expert_cache is None:
            raise RuntimeError('call reset() before expert_action()')
        action, primitive = self._expert_cache
        return action.copy(), primitive

    def joint_positions(self) -> np.ndarray:
        """Return joint positions: float32 [9], 7 arm joints (rad) then 2 finger slides (m)."""
        return np.asarray(self._env.data.qpos[:JOINT_COUNT], dtype=np.float32).copy()

    def render(self) -> dict[str, np.ndarray]:
        """Render every configured camera at the current state (uint8 [H, W, 3] RGB each)."""
        return self._renderer.render(self._env.data) if self._renderer is not None else {}

    def camera_fovy(self, camera: str) -> float:
        """Vertical field of view of ``camera``, degrees."""
        return float(self._env.model.cam(camera).fovy[0])

    def end_effector_position(self) -> np.ndarray:
        """Hand position in the world frame, m."""
        return np.asarray(self._env.tcp_center, dtype=np.float64).copy()

    def end_effector_position_at(self, joint_positions: np.ndarray) -> np.ndarray:
        """Forward kinematics: the hand position (m, world) for the given joint positions.

        What a real arm's tf tree provides; the simulation state is left unchanged.
        """
        data = self._env.data
        saved = data.qpos.copy()
        data.qpos[:JOINT_COUNT] = np.asarray(joint_positions, dtype=np.float64)
        mujoco.mj_kinematics(self._env.model, data)
        position = self.end_effector_position()
        data.qpos[:] = saved
        mujoco.mj_kinematics(self._env.model, data)
        return position

    def goal_position(self) -> np.ndarray:
        """Return the task target position (m, world): ground truth, for evaluation and tests."""
        return np.asarray(self._env._target_pos, dtype=np.float64).copy()

    def close(self) -> None:
        """Free the renderer and the simulation."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()

    def _observation(self, render: bool = True) -> Observation:
        images = self.render() if render else {}
        return Observation(images=images, joint_positions=self.joint_positions(),
                           step=self.step_count)

    def _lower_goal(self, observation: np.ndarray) -> np.ndarray:
        # Lowest target Meta-World allows (observations are clipped to the goal space); a puck
        # resting on the table there is inside the success radius.
        target = np.array(self._env._target_pos, dtype=np.float64)
        target[2] = float(self._env.goal_space.low[2])
        self._env._target_pos = target
        self._env.model.site('goal').pos = target
        observation = observation.copy()
        observation[-3:] = target
        return observation
