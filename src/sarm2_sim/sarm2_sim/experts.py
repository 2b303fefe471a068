"""Meta-World's scripted experts, with every action labelled by the primitive it executes.

Meta-World's policies (``metaworld.policies``) are stateless: each picks a target from an if/elif
chain over the observation. The labellers below repeat those branch conditions (same offsets and
thresholds, read from the policy's own ``_parse_obs``) and name the primitive each branch performs,
so every frame of a demonstration gets a label without hand annotation. The policies compute the
actions; only the labels live here.

Two additions to the policies:

- Release: the grasping experts never let go (Meta-World declares success while the object is
  held). For tasks with ``release`` in the catalogue, once the task succeeds the expert opens the
  gripper, then moves the hand along the task's retreat direction, still labelled with the task's
  last primitive. ``finished`` becomes true when that script is over.
- ``finished`` for every other task is simply "succeeded".

Labels move forward through the task's primitive sequence at once but move back only after the
policy has stayed in an earlier branch for ``REGRESS_STEPS`` steps: pushing experts bounce
between their "approach" and "push" branches for a few steps at every contact (door-close does so
all the way), which is one primitive, while a re-grasp after a slip lasts tens of steps and is a
real step back.
"""

from collections.abc import Callable
import warnings

import metaworld.policies
import numpy as np

from sarm2_common.catalogue import TaskSpec

# Steps of the scripted release: open the gripper in place, then retreat.
RELEASE_OPEN_STEPS = 8
RELEASE_RETREAT_STEPS = 12
# Consecutive steps in an earlier branch before the label steps back (see the module docstring).
REGRESS_STEPS = 15

Observation = dict[str, np.ndarray]
Labeller = Callable[[Observation], str]


def _xy_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a[:2] - b[:2]))


def _z_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(a[2] - b[2]))


def _label_reach(o: Observation) -> str:
    return 'reach'


def _label_push(o: Observation) -> str:
    hand, puck = o['hand_pos'], o['puck_pos'] + np.array([-0.005, 0.0, 0.0])
    # above the puck, then down onto it; afterwards the puck is pushed along the table
    if _xy_distance(hand, puck) > 0.02 or _z_distance(hand, puck) > 0.04:
        return 'reach'
    return 'sweep'


def _label_pick_place(o: Observation) -> str:
    hand, puck = o['hand_pos'], o['puck_pos'] + np.array([-0.005, 0.0, 0.0])
    if _xy_distance(hand, puck) > 0.02:
        return 'reach'
    if _z_distance(hand, puck) > 0.05 and puck[2] < 0.04:
        # the policy starts closing the gripper within 7 cm of the puck: the grasp begins there
        return 'pick_grab' if np.linalg.norm(hand - o['puck_pos']) < 0.07 else 'reach'
    if o['gripper_distance_apart'] > 0.73:
        return 'pick_grab'
    return 'place'


def _label_door_open(o: Observation) -> str:
    hand, door = o['hand_pos'], o['door_pos'] - np.array([0.05, 0.0, 0.0])
    if _xy_distance(hand, door) > 0.12 or _z_distance(hand, door) > 0.04:
        return 'reach'
    return 'pull'


def _label_drawer_open(o: Observation) -> str:
    hand, drawer = o['hand_pos'], o['drwr_pos'] + np.array([0.0, 0.0, -0.02])
    if _xy_distance(hand, drawer) > 0.06 or _z_distance(hand, drawer) > 0.04:
        return 'reach'
    return 'pull'


def _label_drawer_close(o: Observation) -> str:
    hand, drawer = o['hand_pos'], o['drwr_pos'] + np.array([0.0, 0.0, -0.02])
    # in front of the handle (rise over it) or still above it: approaching
    if hand[1] > drawer[1] or _z_distance(hand, drawer) > 0.04:
        return 'reach'
    return 'press'


def _label_button_press_topdown(o: Observation) -> str:
    if _xy_distance(o['hand_pos'], o['button_pos']) > 0.04:
        return 'reach'
    return 'press'


def _label_peg_insert_side(o: Observation) -> str:
    hand, peg = o['hand_pos'], o['peg_pos']
    hole = np.array([-0.35, o['goal_pos'][1], 0.16])
    if _xy_distance(hand, peg) > 0.04:
        return 'reach'
    if _z_distance(hand, peg) > 0.025:
        # the policy closes the gripper once within 15 cm above the peg
        return 'pick_grab' if _z_distance(hand, peg) <= 0.15 else 'reach'
    if np.linalg.norm(peg[1:] - hole[1:]) > 0.03 and peg[0] > -0.2:
        # still carrying the peg to the hole's axis
        return 'insert' if peg[2] > 0.04 else 'pick_grab'
    return 'insert'


def _window_label(offset: np.ndarray) -> Labeller:
    def label(o: Observation) -> str:
        hand, window = o['hand_pos'], o['wndw_pos'] + offset
        if _xy_distance(hand, window) > 0.04 or _z_distance(hand, window) > 0.02:
            return 'reach'
        return 'sweep'
    return label


def _label_door_close(o: Observation) -> str:
    hand, door = o['hand_pos'], o['door_pos'] + np.array([0.05, 0.12, 0.1])
    if hand[0] > door[0] or _z_distance(hand, door) > 0.04:
        return 'reach'
    return 'press'


def _label_handle_press(o: Observation) -> str:
    handle = o['handle_pos'] + np.array([0.0, -0.02, 0.0])
    if _xy_distance(o['hand_pos'], handle) > 0.02:
        return 'reach'
    return 'press'


LABELLERS: dict[str, Labeller] = {
    'reach-v3': _label_reach,
    'push-v3': _label_push,
    'pick-place-v3': _label_pick_place,
    'door-open-v3': _label_door_open,
    'drawer-open-v3': _label_drawer_open,
    'drawer-close-v3': _label_drawer_close,
    'button-press-topdown-v3': _label_button_press_topdown,
    'peg-insert-side-v3': _label_peg_insert_side,
    'window-open-v3': _window_label(np.array([-0.03, -0.03, -0.08])),
    'window-close-v3': _window_label(np.array([0.03, -0.03, -0.08])),
    'door-close-v3': _label_door_close,
    'handle-press-v3': _label_handle_press,
}


class ScriptedExpert:
    """A Meta-World scripted policy plus a primitive labeller and a release script."""

    def __init__(self, spec: TaskSpec):
        if spec.name not in LABELLERS:
            raise ValueError(f'task {spec.name!r} has no primitive labeller; labelled tasks: '
                             f'{", ".join(sorted(LABELLERS))}')
        policy_class = getattr(metaworld.policies, spec.expert, None)
        if policy_class is None:
            raise ValueError(f'task {spec.name!r}: metaworld.policies has no {spec.expert!r}')
        self.spec = spec
        self._policy = policy_class()
        self._label = LABELLERS[spec.name]
        self._release_step: int | None = None
        self._succeeded = False
        self._stage = 0
        self._regress_steps = 0

    def reset(self) -> None:
        """Forget the previous episode (release script, success latch, label progress)."""
        self._release_step = None
        self._succeeded = False
        self._stage = 0
        self._regress_steps = 0

    @property
    def releasing(self) -> bool:
        """Whether the expert is running its release script."""
        return self._release_step is not None

    @property
    def finished(self) -> bool:
        """The task succeeded and, for grasping tasks, the object was released."""
        if self.spec.release_retreat is None:
            return self._succeeded
        return (self._release_step is not None
                and self._release_step >= RELEASE_OPEN_STEPS + RELEASE_RETREAT_STEPS)

    def act(self, observation: np.ndarray) -> tuple[np.ndarray, str]:
        """Return the expert's action (float32 [4], clipped to -1..1) and its primitive.

        Call once per environment state: the label's debounce counts calls.
        """
        if self._release_step is not None:
            action = np.array([0.0, 0.0, 0.0, -1.0])
            if self._release_step >= RELEASE_OPEN_STEPS:
                action[:3] = self.spec.release_retreat
            if self._release_step >= RELEASE_OPEN_STEPS + RELEASE_RETREAT_STEPS:
                action[:3] = 0.0
            return action.astype(np.float32), self.spec.primitives[-1]
        with warnings.catch_warnings():
            # the policies warn whenever a gain saturates the action, i.e. on most steps
            warnings.simplefilter('ignore')
            # copy: some policies shift parsed positions in place (views into the observation)
            action = self._policy.get_action(observation.copy())
        stage = self.spec.primitives.index(self._label(self._policy._parse_obs(observation)))
        if stage >= self._stage:
            self._stage, self._regress_steps = stage, 0
        else:
            self._regress_steps += 1
            if self._regress_steps >= REGRESS_STEPS:
                self._stage, self._regress_steps = stage, 0
        return np.clip(action, -1.0, 1.0).astype(np.float32), self.spec.primitives[self._stage]

    def observe(self, success: bool) -> None:
        """Advance the expert's script after one environment step with this success flag."""
        if self._release_step is not None:
            self._release_step += 1
        elif success and self.spec.release_retreat is not None:
            self._release_step = 0
        self._succeeded = self._succeeded or success
