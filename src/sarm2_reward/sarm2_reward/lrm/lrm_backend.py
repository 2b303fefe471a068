"""The LRM reward backend: asks a VLM every N frames, in the background, and holds the answer.

The live node calls ``step`` for every frame and must never wait for the VLM: ``step`` returns
the latest held estimate at once and, every ``query_every`` frames, hands the current frame to a
worker thread, with the two frames the published prompts also show: the frame of the previous
query (contrastive image A) and the episode's first frame (the progress question's initial
observation). At most one query runs; a newer request replaces a pending one (the VLM should
answer about the present, not work through a backlog), and replaced requests are counted.
Failures (timeouts, HTTP errors, garbage answers) are counted and the held estimate stays, so the
node keeps publishing and reports the fault in diagnostics.
"""

from collections import Counter
from dataclasses import dataclass
import threading
import time

import numpy as np

from ..backend import RewardBackend, RewardEstimate
from sarm2_common.episode import Episode
from .questions import (COMPLETION, completion_query, CONTRASTIVE, contrastive_query, interpret,
                        LrmAnswers, PROGRESS, progress_query, QUESTIONS)
from .settings import VlmSource
from .vlm_clients import VlmClient, VlmError

MODES = ('tri',) + QUESTIONS


@dataclass
class LrmConfig:
    """How the LRM backend queries its VLM."""

    camera: str = 'corner'         # the one view the published prompts show
    query_every: int = 10          # frames between queries
    mode: str = 'tri'              # reward published: tri, contrastive, progress or completion

    def __post_init__(self):
        if not self.camera:
            raise ValueError('the LRM backend needs a camera name')
        if self.query_every < 1:
            raise ValueError(f'query_every must be >= 1 frame, got {self.query_every}')
        if self.mode not in MODES:
            raise ValueError(f'unknown LRM mode {self.mode!r}; choose one of {", ".join(MODES)}')


def ask_round(client: VlmClient, instruction: str, current: np.ndarray,
              earlier: np.ndarray | None, initial: np.ndarray,
              previous_progress: float) -> LrmAnswers:
    """Ask the three questions about ``current``; parse the answers.

    The contrastive question compares ``earlier`` (the previous query's frame) with ``current``
    and is skipped (neutral) when there is no earlier frame; the progress question shows the
    episode's ``initial`` frame too. VlmError propagates to the caller.
    """
    raw = {
        CONTRASTIVE: (None if earlier is None else
                      client.ask(contrastive_query(instruction, earlier, current))),
        PROGRESS: client.ask(progress_query(instruction, initial, current)),
        COMPLETION: client.ask(completion_query(instruction, current)),
    }
    return interpret(raw, previous_progress)


class LrmBackend(RewardBackend):
    """Zero-shot rewards from a VLM; see the module docstring for the timing model."""

    def __init__(self, client: VlmClient, config: LrmConfig | None = None):
        self.config = config or LrmConfig()
        self.client = client
        self._lock = threading.Condition()
        self._pending = None   # the next query: (generation, frame, current, earlier, initial)
        self._stop = False
        self._generation = 0
        self._instruction = ''
        self._frame = -1
        self._last_query_image = None
        self._initial_image = None
        self._answers: LrmAnswers | None = None     # None until the first answer
        self._answered_frame = -1
        self._fault = ''        # the last query's failure, cleared by the next answer
        self.stats = {'queries': 0, 'answers': 0, 'replaced_requests': 0, 'timeout': 0,
                      'http': 0, 'protocol': 0, 'last_latency_s': 0.0,
                      **{f'unparseable_{q}': 0 for q in QUESTIONS}}
        self._worker = threading.Thread(target=self._run, name='lrm-queries', daemon=True)
        self._worker.start()

    @property
    def model_id(self) -> str:
        return f'lrm:{self.client.name}:{self.config.mode}'

    @property
    def cameras(self) -> list[str]:
        return [self.config.camera]

    @property
    def state_dim(self) -> None:
        return None          # the VLM sees only images: any joint vector pairs

    @property
    def fault(self) -> str:
        with self._lock:
            return self._fault

    def reset(self, task: str, instruction: str) -> None:
        with self._lock:
            self._generation += 1
            self._instruction = instruction
            self._pending = None
            self._frame = -1
            self._last_query_image = None
            self._initial_image = None
            self._answers = None
            self._answered_frame = -1

    def step(self, images: dict[str, np.ndarray], joint_positions: np.ndarray,
             stamp: float) -> RewardEstimate:
        start = time.perf_counter()
        camera = self.config.camera
        image = images.get(camera)
        if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'camera {camera!r}: expected a uint8 RGB [H, W, 3] image')
        with self._lock:
            self._frame += 1
            if self._frame == 0:
                # The episode's first frame the backend sees stands for its initial observation.
                self._initial_image = image.copy()
            if self._frame % self.config.query_every == 0:
                if self._pending is not None:
                    self.stats['replaced_requests'] += 1
                current = image.copy()
                self._pending = (self._generation, self._frame, current,
                                 self._last_query_image, self._initial_image)
                self._last_query_image = current
                self._lock.notify()
            answers = self._answers
        # inference_time is what this call cost the node (never the VLM's round trip): it shows
        # in every StageReward that the node did not wait for the VLM.
        elapsed = time.perf_counter() - start
        if answers is None:
            # Before the first answer there is no evidence of progress: reward 0, not the
            # neutral tri value (0.17), which would reward doing nothing.
            return RewardEstimate(
                primitive_probs=np.zeros(0, np.float32), group_probs=np.zeros(0, np.float32),
                progress=0.0, value=-1.0, reward=0.0, success_probability=0.0,
                model_id=self.model_id, inference_time=elapsed)
        return RewardEstimate(
            primitive_probs=np.zeros(0, np.float32), group_probs=np.zeros(0, np.float32),
            progress=answers.progress, value=answers.progress - 1.0,
            reward=answers.reward(self.config.mode),
            success_probability=float(answers.complete), model_id=self.model_id,
            inference_time=elapsed)

    @property
    def staleness_frames(self) -> int:
        """Frames since the frame the held answer is about (-1: no answer yet)."""
        with self._lock:
            return -1 if self._answered_frame < 0 else self._frame - self._answered_frame

    def diagnostics(self) -> dict[str, str]:
        """Counters for the node's DiagnosticArray."""
        with self._lock:
            values = dict(self.stats)
        values['staleness_frames'] = self.staleness_frames
        return {f'vlm_{key}': f'{value:.3f}' if isinstance(value, float) else str(value)
                for key, value in values.items()}

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify()
        self._worker.join(timeout=5)
        self.client.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._stop:
                    self._lock.wait()
                if self._stop:
                    return
                generation, frame, current, earlier, initial = self._pending
                self._pending = None
                instruction = self._instruction
                previous_progress = self._answers.progress if self._answers else 0.0
                self.stats['queries'] += 1
            start = time.perf_counter()
            try:
                answers = ask_round(self.client, instruction, current, earlier, initial,
                                    previous_progress)
            except VlmError as error:
                with self._lock:
                    self.stats[error.kind] += 1
                    self._fault = f'VLM query failed ({error.kind}): {error}'
                continue
            with self._lock:
                self._fault = ''
                self.stats['last_latency_s'] = time.perf_counter() - start
                self.stats['answers'] += 1
                for question in answers.unparseable:
                    self.stats[f'unparseable_{question}'] += 1
                if generation == self._generation:   # an answer about a past episode is dropped
                    self._answers = answers
                    self._answered_frame = frame


def vlm_source_of(config) -> VlmSource:
    """Return the VLM named by the reward node's ``lrm_*`` parameters."""
    return VlmSource(endpoint=config.lrm_endpoint, endpoints=config.lrm_endpoints,
                     model=config.lrm_model, models=config.lrm_models,
                     model_dir=config.lrm_model_dir, adapter_dir=config.lrm_adapter_dir,
                     adapter_dirs=config.lrm_adapter_dirs, timeout=config.lrm_timeout,
                     device=config.device)


def lrm_backend_from_config(config) -> LrmBackend:
    """Build the LRM backend from the reward node's config (``backend: lrm``)."""
    (camera,) = config.cameras       # RewardNodeConfig checks there is exactly one
    return LrmBackend(vlm_source_of(config).make_client(),
                      LrmConfig(camera=camera, query_every=config.lrm_query_every,
                                mode=config.lrm_mode))


def answers_per_frame(client: VlmClient, episode: Episode, config: LrmConfig,
                      tally: Counter | None = None) -> list[LrmAnswers | None]:
    """Offline: the held LRM answers of every frame (queried every N frames; None before any).

    Synchronous: offline relabeling has no frame clock to keep up with. A failed query holds the
    previous answer, exactly as the live backend does. ``tally`` counts queries, answers, failed
    queries per kind (``failed_<kind>``) and unparseable answers per question.
    """
    if config.camera not in episode.images:
        raise ValueError(f'episode {episode.episode_id} has no camera {config.camera!r} '
                         f'(has {sorted(episode.images)})')
    tally = Counter() if tally is None else tally
    frames = episode.images[config.camera]
    held: LrmAnswers | None = None
    earlier = None
    per_frame = []
    for t in range(len(episode)):
        if t % config.query_every == 0:
            tally['queries'] += 1
            try:
                held = ask_round(client, episode.instruction, frames[t], earlier, frames[0],
                                 held.progress if held else 0.0)
                tally['answers'] += 1
                tally.update(f'unparseable_{q}' for q in held.unparseable)
            except VlmError as error:
                tally[f'failed_{error.kind}'] += 1
            earlier = frames[t]
        per_frame.append(held)
    return per_frame


def relabel_episode(client: VlmClient, episode: Episode, config: LrmConfig) -> np.ndarray:
    """Offline LRM rewards (``config.mode``) for every frame of ``episode``; 0 before an answer."""
    return np.array([a.reward(config.mode) if a else 0.0
                     for a in answers_per_frame(client, episode, config)], np.float32)


class LrmEpisodePredictor:
    """The LRM as an offline reward model: per-frame predictions in the evaluator's format."""

    def __init__(self, client: VlmClient, config: LrmConfig):
        self.client = client
        self.config = config

    def predict_episode(self, episode: Episode) -> dict[str, np.ndarray]:
        """Progress, value and success probability (completion answer) of every frame."""
        answers = answers_per_frame(self.client, episode, self.config)
        progress = np.array([a.progress if a else 0.0 for a in answers], np.float32)
        complete = np.array([float(a.complete) if a else 0.0 for a in answers], np.float32)
        return {'progress': progress, 'value': progress - 1.0, 'success_probability': complete}
