"""In-process rollouts on the simulated arm, recorded as bags in the policy node's layout.

The policy node drives a robot (or ``sim_node``) in real time through ROS. Benchmarks and the
data flywheel need many rollouts quickly, so this module runs the same policy through the same
``ControlCore`` (chunk execution + safety filter, ``sim_evaluation``) on the ROS-free
``SimArm``, as fast as the simulator allows, and records every episode with the node's own
``RolloutRecorder``. The bags hold the topics the node records that readers use, with the same
names and types, so ``bag_dataset.read_episode``, ``label_rollouts_from_sim``, ``spiral_update``
and the reward-model trainer read them exactly like node rollouts:

- ``/camera/<name>/image_raw``, ``/joint_states``: the observation of every frame, including the
  last one (the state the episode ended in);
- ``/policy/base_action`` (Float32MultiArray): the policy's action before the safety filter;
  ``/sim/action`` (Float64MultiArray): the executed (filtered) action; none after the last frame;
- ``/sim/ground_truth``: the simulator's truth per frame (success flag after the step that led
  to the frame, the expert's primitive at the frame, Meta-World's shaped reward of that step; 0
  and False on the first frame), as ``sim_node`` publishes it. Evaluation and labelling only;
- ``/sarm2/stage_reward`` (only with a ``reward_backend``): what the live reward node would
  publish for the frame, computed by the same ``RewardBackend`` the node calls;
- ``/episode/metadata``: start and end records, ``metadata_json`` as the node writes it.

Time is the simulator's: frame ``k`` is stamped and logged at ``k * control_period`` (an action
and a reward 1 and 2 ns after their frame, as a live recorder logs them after the image). The
episode ends on the simulator's success or after ``max_steps`` actions, like
``run_sim_episode``; the same seed gives the same outcome with or without recording.
"""

from dataclasses import asdict, dataclass, replace
import json
from pathlib import Path
import shutil
from typing import Callable

import numpy as np
from tqdm import tqdm

from sarm2_common import bag_io, topics
from sarm2_common.vocabulary import primitive_id
from spiral_policy.episode_runner import END_STEP_LIMIT, END_SUCCESS
from spiral_policy.rollout_recorder import RolloutRecorder
from spiral_policy.sim_evaluation import JOINT_STREAM, sim_control_core
from spiral_policy.vla import PolicyObservation

BASE_ACTION_TYPE = 'std_msgs/msg/Float32MultiArray'
REWARD_TOPIC = '/sarm2/stage_reward'
MANIFEST_FILE = 'rollouts.jsonl'
SOURCE = 'sarm2_bringup.rollout_bags'


@dataclass
class RolloutResult:
    """One recorded rollout (also a line of the directory's ``rollouts.jsonl``)."""

    episode_id: str
    bag: str
    task: str
    seed: int
    success: bool
    steps: int
    reason: str
    interventions: int


def _serialize(message) -> bytes:
    return bytes(bag_io.typestore().serialize_cdr(message, message.__msgtype__))


def _float32_array(values: np.ndarray):
    types = bag_io.typestore().types
    layout = types['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0)
    return types[BASE_ACTION_TYPE](layout=layout, data=np.asarray(values, dtype=np.float32))


def stage_reward_message(estimate, stamp_ns: int, frame_id: str, task: str, instruction: str,
                         episode_id: str, frame_index: int):
    """Build the sarm2_msgs/StageReward the reward node publishes for ``estimate``."""
    return bag_io.typestore().types['sarm2_msgs/msg/StageReward'](
        header=bag_io.header(stamp_ns, frame_id), task=task, instruction=instruction,
        episode_id=episode_id, frame_index=int(frame_index),
        primitive_id=estimate.primitive_id, primitive_name=estimate.primitive_name,
        primitive_confidence=estimate.primitive_confidence, group_id=estimate.group_id,
        group_name=estimate.group_name,
        primitive_probabilities=np.asarray(estimate.primitive_probs, np.float32),
        group_probabilities=np.asarray(estimate.group_probs, np.float32),
        progress=float(estimate.progress), value=float(estimate.value),
        reward=float(estimate.reward), success_probability=float(estimate.success_probability),
        model_id=estimate.model_id, inference_time=float(estimate.inference_time))


def record_sim_rollout(arm, core, seed: int, max_steps: int, directory: str | Path,
                       episode_id: str, reward_backend=None,
                       metadata: dict | None = None) -> RolloutResult:
    """Run one episode of ``core``'s policy on ``arm`` and record it to ``directory/episode_id``.

    ``arm``: a ``sarm2_sim.sim_arm.SimArm``; ``core``: its ``sim_control_core``. The bag must not
    exist yet (``FileExistsError``). Returns the outcome (simulator truth).
    """
    spec = arm.spec
    cameras = tuple(arm.config.cameras)
    period_ns = int(round(arm.control_period * 1e9))
    bag_topics = {topics.image_topic(c): bag_io.IMAGE_TYPE for c in cameras}
    bag_topics.update({topics.JOINT_STATES_TOPIC: bag_io.JOINT_STATE_TYPE,
                   bag_io.ACTION_TOPIC: bag_io.ACTION_TYPE,
                   bag_io.BASE_ACTION_TOPIC: BASE_ACTION_TYPE,
                   bag_io.GROUND_TRUTH_TOPIC: bag_io.GROUND_TRUTH_TYPE,
                   bag_io.METADATA_TOPIC: bag_io.METADATA_TYPE})
    if reward_backend is not None:
        bag_topics[REWARD_TOPIC] = bag_io.STAGE_REWARD_TYPE
    details = {'source': SOURCE, 'episode_id': episode_id, 'task': spec.name,
               'instruction': spec.instruction, 'seed': int(seed),
               'policy_id': core.policy.policy_id, 'cameras': list(cameras),
               'control_period': arm.control_period, 'joint_names': list(arm.joint_names),
               'limits': {'max_steps': int(max_steps)},
               'reward_model_id': reward_backend.model_id if reward_backend is not None else '',
               **(metadata or {})}
    recorder = RolloutRecorder(directory, bag_io.typestore(), flush_period=1e9)
    bag = recorder.start(episode_id, bag_topics, details)

    def write(topic: str, message, stamp: int) -> None:
        if not recorder.write(topic, _serialize(message), stamp):
            raise RuntimeError(f'{bag}: could not record a {topic} message')

    write(bag_io.METADATA_TOPIC, bag_io.metadata_message(
        0, bag_io.METADATA_START, episode_id, spec.name, spec.instruction, seed,
        metadata_json=json.dumps(details, sort_keys=True)), 0)
    observation = arm.reset(seed)
    core.begin_episode()
    if reward_backend is not None:
        reward_backend.reset(spec.name, spec.instruction)
    success, sim_reward, interventions, episode_return = False, 0.0, 0, 0.0
    for step in range(max_steps + 1):
        stamp = step * period_ns
        for camera in cameras:
            write(topics.image_topic(camera),
                  bag_io.image_message(observation.images[camera], stamp, camera), stamp)
        write(topics.JOINT_STATES_TOPIC, bag_io.joint_state_message(
            arm.joint_names, observation.joint_positions, stamp), stamp)
        primitive = arm.expert_action()[1]
        write(bag_io.GROUND_TRUTH_TOPIC, bag_io.ground_truth_message(
            stamp, spec.name, episode_id, step, success, primitive_id(primitive), primitive,
            sim_reward), stamp)
        if reward_backend is not None:
            estimate = reward_backend.step(observation.images, observation.joint_positions,
                                           stamp / 1e9)
            episode_return += estimate.reward
            write(REWARD_TOPIC, stage_reward_message(estimate, stamp, cameras[0], spec.name,
                                                     spec.instruction, episode_id, step),
                  stamp + 2)
        if success or step == max_steps:
            break
        now = step * arm.control_period
        for camera in cameras:
            core.safety.observe(f'camera/{camera}', now)
        core.safety.observe(JOINT_STREAM, now)
        out = core.step(PolicyObservation(observation.images, observation.joint_positions,
                                          spec.instruction),
                        arm.end_effector_position(), now, arm.control_period)
        interventions += bool(out.safety.reasons)
        if out.base_action is not None:
            write(bag_io.BASE_ACTION_TOPIC, _float32_array(out.base_action), stamp + 1)
        action = (out.executed_action if out.executed_action is not None
                  else np.zeros(4, np.float32))
        write(bag_io.ACTION_TOPIC, bag_io.action_message(action), stamp + 1)
        observation, info = arm.step(np.asarray(action, dtype=np.float32))
        success, sim_reward = bool(info.success), float(info.sim_reward)
    steps = observation.step
    reason = END_SUCCESS if success else END_STEP_LIMIT
    details.update(success=success, reason=reason, steps=steps, episode_return=episode_return,
                   safety_interventions=interventions)
    end_stamp = steps * period_ns + 3
    write(bag_io.METADATA_TOPIC, bag_io.metadata_message(
        end_stamp, bag_io.METADATA_END, episode_id, spec.name, spec.instruction, seed,
        success=success, reason=reason, steps=steps,
        metadata_json=json.dumps(details, sort_keys=True)), end_stamp)
    recorder.stop(details)
    return RolloutResult(episode_id=episode_id, bag=str(bag), task=spec.name, seed=int(seed),
                         success=success, steps=steps, reason=reason,
                         interventions=interventions)


def rollout_episode_id(task: str, index: int, seed: int) -> str:
    """Return the episode id (and bag name) of rollout ``index`` of ``task``."""
    return f'{task}-r{index:04d}-s{seed}'


def read_manifest(directory: str | Path) -> list[RolloutResult]:
    """Return the finished rollouts listed in ``directory/rollouts.jsonl`` (none: empty).

    Each bag is taken from ``directory`` (where it was recorded), not from the path stored in
    the manifest: that path is relative to where the recorder ran, so a cache read from another
    working directory, or moved, would otherwise look empty and be recorded again.
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return []
    results = []
    for line in path.read_text().splitlines():
        if line.strip():
            result = RolloutResult(**json.loads(line))
            results.append(replace(result, bag=str(Path(directory) / Path(result.bag).name)))
    return results


def record_sim_rollouts(policy, task: str, seeds: list[int], directory: str | Path,
                        max_steps: int = 150, cameras: tuple[str, ...] = ('corner',),
                        image_size: int = 64, reward_backend=None, progress: bool = True,
                        metadata: dict | None = None,
                        on_episode: Callable[[], None] | None = None) -> list[RolloutResult]:
    """Record one rollout of ``policy`` per seed of ``task`` under ``directory``; resumable.

    Rollout ``i`` is ``directory/<task>-r<i>-s<seed>``. Finished rollouts (listed in
    ``rollouts.jsonl`` with their bag present) are kept; a bag without a manifest line was cut
    short and is recorded again. Returns the results in seed order. ``on_episode`` is called
    after each seed, recorded or kept (a caller's own progress display).
    """
    from sarm2_sim.sim_arm import SimArm, SimArmConfig

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    done = {r.episode_id: r for r in read_manifest(directory) if Path(r.bag).is_dir()}
    results, arm = [], None
    try:
        for index, seed in enumerate(tqdm(seeds, desc=f'rollouts {task}', unit='episode',
                                          disable=not progress)):
            episode_id = rollout_episode_id(task, index, seed)
            if episode_id in done:
                results.append(done[episode_id])
                if on_episode is not None:
                    on_episode()
                continue
            if arm is None:
                arm = SimArm(SimArmConfig(task=task, cameras=cameras, image_size=image_size,
                                          max_steps=max_steps))
                core = sim_control_core(policy, arm, cameras)
            shutil.rmtree(directory / episode_id, ignore_errors=True)
            result = record_sim_rollout(arm, core, seed, max_steps, directory, episode_id,
                                        reward_backend, metadata)
            with open(directory / MANIFEST_FILE, 'a', encoding='utf-8') as manifest:
                manifest.write(json.dumps(asdict(result)) + '\n')
            results.append(result)
            if on_episode is not None:
                on_episode()
    finally:
        if arm is not None:
            arm.close()
    return results
