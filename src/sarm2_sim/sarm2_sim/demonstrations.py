"""Record scripted demonstrations as rosbag2 bags: successes, suboptimal runs and failures.

One bag per episode, at ``<out_dir>/<task>/episode_<index>``, in the layout of
``sarm2_common.bag_io`` (images, joint states, actions, per-frame primitive labels, metadata).
Every episode is fully determined by (seed, task, index), so an interrupted recording resumes by
skipping finished bags and produces the same data as an uninterrupted one.

Episode kinds (``failure_fraction`` of the episodes get a failure mode):

- expert: the scripted expert, with Gaussian ``noise`` on its xyz commands;
- noisy: heavy action noise (std ``NOISY_STD``), often slow, sometimes failing;
- stall: the arm freezes mid-task; it either resumes later (suboptimal) or the episode ends;
- early_stop: the episode ends mid-task;
- drop (grasping tasks): the gripper opens while carrying, then the hand backs off.

Every frame is labelled with the primitive the expert is in at that state, whatever was executed.
The outcome (``success``) is the simulator's flag at the last frame.
"""

import argparse
from dataclasses import asdict, dataclass
import json
from pathlib import Path
import shutil
import sys
import zlib

import numpy as np
from sarm2_common.bag_io import (ACTION_TOPIC, action_message, BagWriter, GROUND_TRUTH_TOPIC,
                                 ground_truth_message, image_message, is_finished_bag,
                                 joint_state_message, METADATA_END, METADATA_START,
                                 metadata_message, METADATA_TOPIC, topic_counts)
from sarm2_common.topics import image_topic, JOINT_STATES_TOPIC
from sarm2_common.vocabulary import primitive_id
from tqdm import tqdm

from sarm2_common.catalogue import check_tasks, load_catalogue, task_names
from sarm2_sim.sim_arm import CAMERAS, SimArm, SimArmConfig

MANIFEST_FILE = 'recording.json'
MANIFEST_FORMAT = 'sarm2_sim.demonstrations/1'
NOISY_STD = 0.8
FAILURE_MODES = ('noisy', 'stall', 'early_stop', 'drop')
# Steps the arm stays frozen / hovers after a stall or drop before the episode ends or resumes.
STALL_STEPS = (15, 40)
# Steps after entering the triggering primitive before a failure strikes.
TRIGGER_DELAY = (0, 12)


class RecordingRefusedError(RuntimeError):
    """The output directory holds data this recording must not overwrite."""


@dataclass(frozen=True)
class EpisodePlan:
    """What happens in one episode, drawn from its own seed."""

    task: str
    index: int
    seed: int
    mode: str
    trigger_stage: int
    trigger_delay: int
    stall_steps: int
    resume: bool

    @property
    def episode_id(self) -> str:
        return f'{self.task}-e{self.index:04d}-s{self.seed}'


def episode_seed(seed: int, task: str, index: int) -> int:
    """Return the simulator seed of episode ``index`` of ``task`` (recording seed ``seed``)."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(task.encode()), index])
    return int(sequence.generate_state(1)[0] & 0x7FFFFFFF)


def plan_episode(seed: int, task: str, index: int, failure_fraction: float,
                 stages: int, can_drop: bool) -> EpisodePlan:
    """Draw the episode's kind and failure timing (deterministic in its arguments)."""
    sim_seed = episode_seed(seed, task, index)
    rng = np.random.default_rng(sim_seed)
    modes = [m for m in FAILURE_MODES if can_drop or m != 'drop']
    mode = str(rng.choice(modes)) if rng.random() < failure_fraction else 'expert'
    # Failures strike in the last primitive for drops (the object is carried), else anywhere
    # after the approach started.
    trigger_stage = stages - 1 if mode == 'drop' else int(rng.integers(0, stages))
    return EpisodePlan(task=task, index=index, seed=sim_seed, mode=mode,
                       trigger_stage=trigger_stage,
                       trigger_delay=int(rng.integers(*TRIGGER_DELAY)) + 5 * (trigger_stage == 0),
                       stall_steps=int(rng.integers(*STALL_STEPS)),
                       resume=bool(rng.random() < 0.5))


@dataclass(frozen=True)
class RecordingConfig:
    """Everything that decides the content of a recording (stored as recording.json)."""

    seed: int = 0
    noise: float = 0.0
    failure_fraction: float = 0.3
    image_size: int = 64
    cameras: tuple[str, ...] = ('corner',)
    max_steps: int = 200

    def __post_init__(self):
        if self.noise < 0.0:
            raise ValueError(f'noise must be >= 0, got {self.noise}')
        if not 0.0 <= self.failure_fraction <= 1.0:
            raise ValueError(f'failure_fraction must be in 0..1, got {self.failure_fraction}')
        if not self.cameras:
            raise ValueError('record at least one camera')

    def manifest(self) -> dict:
        return {'format': MANIFEST_FORMAT, **asdict(self), 'cameras': list(self.cameras)}


def episode_path(out_dir: Path, task: str, index: int) -> Path:
    """Bag directory of one episode."""
    return Path(out_dir) / task / f'episode_{index:04d}'


def _is_complete(path: Path) -> bool:
    if not is_finished_bag(path):
        return False
    try:
        return topic_counts(path).get(METADATA_TOPIC, 0) == 2
    except Exception:  # noqa: BLE001 - an unreadable bag is simply not complete
        return False


def _check_out_dir(out_dir: Path, config: RecordingConfig, overwrite: bool) -> bool:
    """Return whether finished bags in ``out_dir`` belong to this recording (may be kept)."""
    manifest_path = out_dir / MANIFEST_FILE
    if manifest_path.is_file():
        try:
            existing = json.loads(manifest_path.read_text(encoding='utf-8'))
        except ValueError:
            existing = None
        if existing == config.manifest():
            return True
        if not overwrite:
            raise RecordingRefusedError(
                f'{out_dir} holds a recording made with other settings ({manifest_path}: '
                f'{existing}); choose another --out directory or pass --overwrite')
    elif out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise RecordingRefusedError(f'{out_dir} exists, is not empty and is not a demonstration '
                                    'recording; choose another --out directory or pass '
                                    '--overwrite')
    return False


def record_demonstrations(out_dir, tasks, episodes_per_task, seed=0, noise=0.0,
                          failure_fraction=0.3, image_size=64, cameras=('corner',),
                          progress=True, max_steps=200, overwrite=False) -> list[Path]:
    """Record ``episodes_per_task`` episodes of each task; return every episode's bag directory.

    Finished bags already in ``out_dir`` are kept (resume). Raises RecordingRefusedError when
    ``out_dir`` holds a foreign directory, another recording's settings or an unfinished bag,
    unless ``overwrite`` (which replaces only the conflicting episode directories).
    """
    out_dir = Path(out_dir)
    config = RecordingConfig(seed=int(seed), noise=float(noise),
                             failure_fraction=float(failure_fraction),
                             image_size=int(image_size), cameras=tuple(cameras),
                             max_steps=int(max_steps))
    catalogue = load_catalogue()
    check_tasks(tasks, catalogue)
    # bags of another recording (other settings, or no manifest) are replaced, never mixed in
    keep_finished = _check_out_dir(out_dir, config, overwrite)

    todo, paths = [], []
    for task in tasks:
        for index in range(episodes_per_task):
            path = episode_path(out_dir, task, index)
            paths.append(path)
            if keep_finished and _is_complete(path):
                continue
            if path.exists() and not overwrite:
                raise RecordingRefusedError(
                    f'{path} exists but is not a finished episode bag (interrupted recording or '
                    'foreign data); delete it or pass --overwrite')
            todo.append((task, index, path))

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).write_text(json.dumps(config.manifest(), indent=1) + '\n',
                                         encoding='utf-8')
    bar = tqdm(total=len(todo), unit='episode', disable=not progress, desc='demonstrations')
    arms: dict[str, SimArm] = {}
    try:
        for task, index, path in todo:
            if task not in arms:
                for arm in arms.values():
                    arm.close()
                arms = {task: SimArm(SimArmConfig(task=task, cameras=config.cameras,
                                                  image_size=config.image_size,
                                                  seed=config.seed,
                                                  max_steps=config.max_steps))}
            arm = arms[task]
            plan = plan_episode(config.seed, task, index, config.failure_fraction,
                                len(arm.spec.primitives), arm.spec.release_retreat is not None)
            if path.exists():
                shutil.rmtree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            outcome = record_episode(arm, plan, path, config)
            bar.set_postfix(task=task, success=outcome['success'], reason=outcome['reason'])
            bar.update()
    finally:
        bar.close()
        for arm in arms.values():
            arm.close()
    return paths


def _failure_action(plan: EpisodePlan, steps_since_trigger: int, expert: np.ndarray,
                    held_gripper: float) -> tuple[np.ndarray | None, str]:
    """Return the action during a triggered failure, or (None, reason) to end the episode."""
    if plan.mode == 'early_stop':
        return None, 'early_stop'
    if steps_since_trigger >= plan.stall_steps:
        if plan.mode == 'stall' and plan.resume:
            return expert, ''
        return None, plan.mode
    if plan.mode == 'stall':
        return np.array([0.0, 0.0, 0.0, held_gripper], dtype=np.float32), ''
    # drop: open the gripper, then back off upwards
    action = np.array([0.0, 0.0, 0.0, -1.0], dtype=np.float32)
    if steps_since_trigger >= 5:
        action[2] = 0.5
    return action, ''


def record_episode(arm: SimArm, plan: EpisodePlan, path: Path, config: RecordingConfig) -> dict:
    """Run one planned episode on ``arm`` and write it to a bag at ``path``; return its outcome."""
    rng = np.random.default_rng(plan.seed + 1)
    period_ns = int(round(arm.control_period * 1e9))
    spec = arm.spec
    details = {'source': 'sarm2_sim.demonstrations', 'mode': plan.mode, 'index': plan.index,
               'noise': config.noise, 'cameras': list(config.cameras),
               'image_size': config.image_size, 'primitives': list(spec.primitives),
               'split': spec.split, 'control_period': arm.control_period,
               'joint_names': list(arm.joint_names)}
    noise_std = NOISY_STD if plan.mode == 'noisy' else config.noise
    observation = arm.reset(plan.seed)
    info_success, reward = False, 0.0
    trigger_step: int | None = None
    stage_entered: int | None = 0 if plan.trigger_stage == 0 else None
    held_gripper = -1.0
    reason = 'step_limit'
    with BagWriter(path) as bag:
        bag.write(METADATA_TOPIC, metadata_message(
            0, METADATA_START, plan.episode_id, spec.name, spec.instruction, plan.seed,
            metadata_json=json.dumps(details)), 0)
        while True:
            step = observation.step
            stamp = step * period_ns
            expert, primitive = arm.expert_action()
            if stage_entered is None and primitive == spec.primitives[plan.trigger_stage]:
                stage_entered = step
            for camera, image in observation.images.items():
                bag.write(image_topic(camera), image_message(image, stamp, camera), stamp)
            bag.write(JOINT_STATES_TOPIC, joint_state_message(
                arm.joint_names, observation.joint_positions, stamp), stamp)
            bag.write(GROUND_TRUTH_TOPIC, ground_truth_message(
                stamp, spec.name, plan.episode_id, step, info_success, primitive_id(primitive),
                primitive, reward), stamp)

            action = expert.copy()
            if noise_std > 0.0:
                action[:3] += rng.normal(0.0, noise_std, 3).astype(np.float32)
            if (trigger_step is None and plan.mode not in ('expert', 'noisy')
                    and stage_entered is not None
                    and step >= stage_entered + plan.trigger_delay):
                trigger_step = step
            end_reason = ''
            if trigger_step is not None:
                failure, end_reason = _failure_action(plan, step - trigger_step, action,
                                                      held_gripper)
                if failure is not None:
                    action = failure
            if arm.expert_finished and plan.mode in ('expert', 'noisy', 'stall'):
                end_reason = 'success' if info_success else end_reason or 'expert_finished'
            elif step >= config.max_steps:
                end_reason = end_reason or 'step_limit'
            action = np.clip(action, -1.0, 1.0)
            if end_reason:
                # the frame ends the episode: its command is "stop, keep the gripper as it is"
                action = np.array([0.0, 0.0, 0.0, held_gripper], dtype=np.float32)
            bag.write(ACTION_TOPIC, action_message(action), stamp)
            if end_reason:
                reason = end_reason
                break
            held_gripper = float(action[3])
            observation, info = arm.step(action)
            info_success, reward = info.success, info.sim_reward
        success = bool(arm.success)
        end_stamp = observation.step * period_ns
        bag.write(METADATA_TOPIC, metadata_message(
            end_stamp, METADATA_END, plan.episode_id, spec.name, spec.instruction, plan.seed,
            success=success, reason=reason, steps=observation.step,
            metadata_json=json.dumps(details)), end_stamp)
    return {'success': success, 'reason': reason, 'steps': observation.step}


def _parse_tasks(text: str, catalogue) -> list[str]:
    if text in ('train', 'heldout'):
        return task_names(catalogue, text)
    if text == 'all':
        return task_names(catalogue)
    return [name.strip() for name in text.split(',') if name.strip()]


def main(argv: list[str] | None = None) -> int:
    """Command line: record demonstrations (see --help)."""
    parser = argparse.ArgumentParser(
        prog='record_demos',
        description='Record scripted Meta-World demonstrations, labelled per frame with action '
                    'primitives, as rosbag2 bags (MCAP, one per episode). A fraction of the '
                    'episodes fail on purpose (noise, stalls, early stops, drops). Re-running '
                    'the same command resumes: finished episodes are skipped.')
    parser.add_argument('--out', required=True, type=Path,
                        help='output directory (one <task>/episode_NNNN bag per episode)')
    parser.add_argument('--tasks', default='train',
                        help="'train', 'heldout', 'all' or comma-separated task names "
                             '(default: train)')
    parser.add_argument('--episodes', type=int, default=10, help='episodes per task (10)')
    parser.add_argument('--seed', type=int, default=0, help='recording seed (0)')
    parser.add_argument('--noise', type=float, default=0.0,
                        help='std of Gaussian noise on every xyz command, -1..1 units (0)')
    parser.add_argument('--failure-fraction', type=float, default=0.3,
                        help='fraction of episodes given a failure mode (0.3)')
    parser.add_argument('--image-size', type=int, default=64, help='square image size, px (64)')
    parser.add_argument('--cameras', default='corner',
                        help=f'comma-separated cameras from: {", ".join(CAMERAS)} (corner)')
    parser.add_argument('--max-steps', type=int, default=200, help='step limit per episode')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace unfinished or conflicting episode directories')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error('--episodes must be >= 1')
    try:
        catalogue = load_catalogue()
        tasks = _parse_tasks(args.tasks, catalogue)
        cameras = tuple(c.strip() for c in args.cameras.split(',') if c.strip())
        # validate camera and size before touching the output directory
        SimArmConfig(task=tasks[0] if tasks else '', cameras=cameras,
                     image_size=args.image_size, max_steps=args.max_steps)
        paths = record_demonstrations(
            args.out, tasks, args.episodes, seed=args.seed, noise=args.noise,
            failure_fraction=args.failure_fraction, image_size=args.image_size,
            cameras=cameras, progress=not args.no_progress, max_steps=args.max_steps,
            overwrite=args.overwrite)
    except (ValueError, RecordingRefusedError) as error:
        print(f'record_demos: error: {error}', file=sys.stderr)
        return 1
    print(f'{len(paths)} episode bags in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
