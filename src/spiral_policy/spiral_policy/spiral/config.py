"""SPIRAL hyper-parameters: one validated dataclass shared by training, deployment and benches.

Defaults follow the method description (openspiral): an ensemble of 5 critics, a critic target
that blends the Monte-Carlo return and the TD target with alpha = 0.5, gamma close to 1 over
chunked returns, TD3-style target smoothing, an L2 penalty beta on the residual and best-of-k
noise candidates at deployment. Sizes are small because everything here trains on a CPU.
"""

from dataclasses import asdict, dataclass, fields
import json
from pathlib import Path
from types import MappingProxyType

REWARD_SOURCES = ('dense', 'sparse')
TRANSITIONS = ('frame', 'chunk')
OBSERVATIONS = ('pixels', 'base_features')
MC_TARGETS = ('rewards', 'terminal', 'terminal_success')


@dataclass
class SpiralConfig:
    """Residual actor-critic configuration (saved as JSON beside every residual checkpoint)."""

    # Interface of the frozen base policy the residual sits on.
    action_dim: int = 4
    chunk_size: int = 8
    joint_dim: int = 9
    cameras: tuple[str, ...] = ('corner',)
    # What the residual and the critics see besides the joints and the base chunk: 'pixels', the
    # camera images average-pooled to feature_image_size for a small CNN trained with them, or
    # 'base_features', the frozen base policy's own observation features (the anchor feeds the
    # VLA's pooled vision features; base_feature_dim must match the base's).
    observation: str = 'pixels'
    feature_image_size: int = 32
    base_feature_dim: int = 0
    hidden_dim: int = 256
    # The residual is `residual_scale * tanh(.)`: a bounded correction around the base action.
    residual_scale: float = 0.3
    num_critics: int = 5
    # Per-step discount; chunk transitions discount by gamma ** chunk_size.
    gamma: float = 0.99
    # Weight of the Monte-Carlo return in the critic target (1 - alpha goes to the TD target).
    mc_alpha: float = 0.5
    # Which Monte-Carlo return (targets.py): 'rewards' is the observed discounted return of
    # this config's rewards; 'terminal' is the anchor's p * gamma^(steps remaining) with p = 1;
    # 'terminal_success' the same with p = the observed outcome (1 success, 0 failure).
    mc_target: str = 'rewards'
    # Where transitions start: every frame (the anchor) or only at the policy's chunk starts.
    transitions: str = 'frame'
    # TD3 target smoothing, in action units, applied to the next-state action.
    target_noise: float = 0.1
    target_noise_clip: float = 0.25
    # Actor loss = -min_j Q_j + beta * mean(residual ** 2).
    beta: float = 1.0
    # Action bounds of the arm (Meta-World style velocity commands + gripper).
    action_low: float = -1.0
    action_high: float = 1.0
    # Optimisation.
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    batch_size: int = 256
    updates: int = 2000
    actor_delay: int = 2
    polyak_tau: float = 0.005
    # Deployment: best of k candidates (candidate 0 is noise-free) scored by min-Q.
    best_of_k: int = 8
    candidate_noise: float = 0.1
    # Reward used to build transitions: dense per-frame rewards or sparse success only.
    reward_source: str = 'dense'
    # Paid on the last action of a successful rollout, on top of the dense rewards: the observed
    # outcome ranks a success above a near-miss the reward model scores almost as high. With
    # reward_source 'sparse' it is the only reward.
    success_reward: float = 1.0
    # RA-BC: a chunk's BC weight is clip(progress gain / kappa, 0, 1).
    rabc_kappa: float = 0.01

    def __post_init__(self):
        self.cameras = tuple(self.cameras)
        positive = ('action_dim', 'chunk_size', 'joint_dim', 'feature_image_size', 'hidden_dim',
                    'num_critics', 'batch_size', 'actor_delay', 'best_of_k')
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f'SpiralConfig.{name} must be >= 1, got {getattr(self, name)}')
        if self.updates < 0:
            raise ValueError(f'SpiralConfig.updates must be >= 0, got {self.updates}')
        if not self.cameras:
            raise ValueError('SpiralConfig.cameras must name at least one camera')
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f'SpiralConfig.gamma must be in (0, 1], got {self.gamma}')
        if not 0.0 <= self.mc_alpha <= 1.0:
            raise ValueError(f'SpiralConfig.mc_alpha must be in [0, 1], got {self.mc_alpha}')
        if not 0.0 < self.polyak_tau <= 1.0:
            raise ValueError(f'SpiralConfig.polyak_tau must be in (0, 1], got {self.polyak_tau}')
        for name in ('residual_scale', 'target_noise', 'target_noise_clip', 'beta', 'actor_lr',
                     'critic_lr', 'candidate_noise', 'success_reward'):
            if getattr(self, name) < 0:
                raise ValueError(f'SpiralConfig.{name} must be >= 0, got {getattr(self, name)}')
        if self.rabc_kappa <= 0:
            raise ValueError(f'SpiralConfig.rabc_kappa must be > 0, got {self.rabc_kappa}')
        if self.action_low >= self.action_high:
            raise ValueError(f'SpiralConfig.action_low ({self.action_low}) must be below '
                             f'action_high ({self.action_high})')
        for name, allowed in (('mc_target', MC_TARGETS), ('transitions', TRANSITIONS),
                              ('observation', OBSERVATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f'SpiralConfig.{name} must be one of {allowed}, '
                                 f'got {getattr(self, name)!r}')
        if self.observation == 'base_features' and self.base_feature_dim < 1:
            raise ValueError("SpiralConfig.base_feature_dim must be >= 1 with observation "
                             "'base_features' (the size of the base policy's features)")
        if self.reward_source not in REWARD_SOURCES:
            raise ValueError(f'SpiralConfig.reward_source must be one of {REWARD_SOURCES}, '
                             f'got {self.reward_source!r}')

    @property
    def td_weight(self) -> float:
        """Weight of the TD target in the blended critic target."""
        return 1.0 - self.mc_alpha

    @property
    def chunk_flat_dim(self) -> int:
        """Size of one flattened action chunk."""
        return self.chunk_size * self.action_dim

    def to_json(self) -> str:
        """Serialise to JSON (tuples become lists)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> 'SpiralConfig':
        """Build from a dict, rejecting unknown keys with a message naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f'unknown SpiralConfig keys {unknown}; known keys: {sorted(known)}')
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> 'SpiralConfig':
        """Read a config JSON file."""
        return cls.from_dict(json.loads(Path(path).read_text()))


# What `spiral_loop`, `make demo` and `bench/spiral.py` run on the compact VLA, written once:
# networks small enough to train a round in minutes on a CPU, and the coefficients measured on
# the VLA base (docs/benchmarks.md, `## spiral`). The residual scale is the anchor's 0.1: at 0.2
# a first round on 30 episodes per task could drive the VLA into states its data never reached
# (drawer-open, one seed 7/15 -> 0/15); at 0.1 no seed collapsed and SPIRAL ended higher on both
# bench tasks.
COMPACT_VLA_SETTINGS = MappingProxyType({
    'feature_image_size': 16, 'hidden_dim': 128, 'batch_size': 128, 'mc_alpha': 0.5,
    'reward_source': 'dense', 'residual_scale': 0.1, 'beta': 2.0, 'best_of_k': 8,
    'candidate_noise': 0.1,
})


def compact_vla_config(**values) -> SpiralConfig:
    """``SpiralConfig`` with ``COMPACT_VLA_SETTINGS``, and ``values`` on top of them."""
    return SpiralConfig.from_dict({**COMPACT_VLA_SETTINGS, **values})
