"""The three LRM questions, asked the way the published Large Reward Models adapters were trained.

Source: physical-superintelligence-lab/Large-Reward-Models, ``vlm_reward/vlm_reward_server.py``
(``compute_vlm_comparison``, ``compute_vlm_reward`` with ``reward_type="progress"`` and an initial
image but no goal image, as the tri-mode config ``vlm_include_initial_image: true`` sends it, and
``compute_vlm_completion``). The prompt texts below are that server's, character for character;
the adapters (USC-PSI-Lab/LRM-models) answer in the format those prompts ask for, so other
wording or answer keys would leave the adapters guessing.

A question is a ``Query``: text segments and images interleaved in the order the model sees them
(the server splits each prompt at its ``<image>`` markers and drops whitespace-only segments; the
completion prompt's segments are also stripped, as the server does), plus the answer budget the
server gives it (the contrastive answer reasons step by step first, hence 512 tokens).

- contrastive: image A = the earlier query's frame, image B = the current frame;
  ``{ "more_complete_image": "ImageA" | "ImageB" }`` -> -1 / +1 (later frame more complete).
- progress: the episode's initial frame and the current frame;
  ``{ "completion_progress": 0.0 .. 1.0 }``.
- completion: the current frame; ``{ "task_completed": "yes" | "no" }``.

Parsing is tolerant of what a reasoning model writes around its answer (text before the JSON, a
code fence, spacing, a quoted number) and strict about the answer itself: only the question's own
key with an allowed value counts, and when a reply holds several, the last one (the conclusion
after the reasoning) does. Per question, as the server parses, except where noted:

- contrastive: the last ``"more_complete_image": "ImageA"|"ImageB"``; failing that, whichever of
  the tokens ImageA / ImageB the reply mentions last (the server's last resort).
- progress: the last ``"completion_progress": <number>`` (quoted or not), clamped to 0..1;
  ``"NA"`` reads as 0.0. Unlike the server, a reply without the key is not searched for any
  bare number: the server's first fallback pattern matches a standalone 0 or 1 anywhere, so
  "in image 1 the drawer is closed" would read as finished.
- completion: the last ``"task_completed": "yes"|"no"`` (any case); failing that, a reply that
  contains exactly one of the words yes / no. Unlike the server, which tests substrings (so
  "not", "know" or "now" read as "no") and defaults to "no", a reply with neither word, or both,
  is unparseable.

Anything else is *unparseable*: it is counted by the caller and replaced by a documented neutral
value, so a confused model never invents a reward:

- contrastive: 0 (no preference between the frames), i.e. 0.5 on the 0..1 scale;
- progress: the last parsed progress of the episode (0.0 before any), i.e. "no news";
- completion: "no" (0.0): garbage must never declare success and end an episode.
"""

from dataclasses import dataclass
import math
import re

import numpy as np

CONTRASTIVE = 'contrastive'
PROGRESS = 'progress'
COMPLETION = 'completion'
QUESTIONS = (CONTRASTIVE, PROGRESS, COMPLETION)
IMAGE_MARKER = '<image>'

CONTRASTIVE_KEY = 'more_complete_image'
PROGRESS_KEY = 'completion_progress'
COMPLETION_KEY = 'task_completed'
# Answer budgets of the source server (max_new_tokens per question).
MAX_TOKENS = {CONTRASTIVE: 512, PROGRESS: 128, COMPLETION: 128}

_CONTRASTIVE_TEMPLATE = (
    'Task: Compare the completion progress.\n\n'
    'The task is: {task}.\n\n'
    'You are given:\n'
    '- Later observation (Image A): <image>\n'
    '- Later observation (Image B): <image>\n\n'
    'Question: Which of Image A or Image B is closer to completing the task?\n'
    'Select one value from the following list:\n'
    '["ImageA", "ImageB"]\n\n'
    'Please provide a step-by-step visual analysis first, and then output your answer in the '
    'following JSON format:\n'
    '{{ "more_complete_image": "selected_value" }}')
_PROGRESS_TEMPLATE = (
    'Task: Estimate the completion progress.\n'
    'The task is: {task}\n'
    'You are given:\n'
    '- Initial observation: <image>\n'
    '- Current observation: <image>\n\n'
    'Question: Based on the task description, estimate the completion progress as a value '
    'between 0.0 and 1.0.\n'
    'Select one value from the following list:\n'
    '[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]\n\n'
    'Definitions:\n'
    '- 0.0: Task has just started.\n'
    '- 0.1 - 0.9: Intermediate progress steps (assess how close to completion).\n'
    '- 1.0: Task is Finished.\n'
    'Output your answer in the following JSON format:\n'
    '{{ "completion_progress": selected_value }}')
_COMPLETION_TEMPLATE = (
    'Task: Whether the task has been completed.\n\n'
    'The task is: {task}\n\n'
    'You are given:\n'
    '- Current observation: <image>\n\n'
    'Has the task been completed?\n'
    'Output your answer in the following JSON format:\n'
    '{{ "task_completed": "yes" or "no" }}')


@dataclass(frozen=True)
class Query:
    """One question for the VLM: text and uint8 RGB images interleaved, in the model's order."""

    question: str                            # one of QUESTIONS (selects adapter / served model)
    parts: tuple                             # str text segments and np.ndarray [H, W, 3] images
    max_tokens: int                          # answer budget

    @property
    def images(self) -> list[np.ndarray]:
        """The images, in order."""
        return [p for p in self.parts if not isinstance(p, str)]

    def text(self, marker: str = IMAGE_MARKER) -> str:
        """Return the prompt as the model reads it, ``marker`` standing for each image."""
        return ''.join(p if isinstance(p, str) else marker for p in self.parts)


def _interleave(question: str, template: str, instruction: str, images: list[np.ndarray],
                strip: bool) -> Query:
    segments = template.format(task=instruction).split(IMAGE_MARKER)
    if len(segments) != len(images) + 1:
        raise ValueError(f'{question} prompt has {len(segments) - 1} images, got {len(images)}')
    parts = []
    for index, segment in enumerate(segments):
        if segment.strip():
            parts.append(segment.strip() if strip else segment)
        if index < len(images):
            parts.append(images[index])
    return Query(question, tuple(parts), MAX_TOKENS[question])


def contrastive_query(instruction: str, earlier: np.ndarray, current: np.ndarray) -> Query:
    """Ask which of image A (``earlier``) and image B (``current``) is closer to completion."""
    return _interleave(CONTRASTIVE, _CONTRASTIVE_TEMPLATE, instruction, [earlier, current],
                       strip=False)


def progress_query(instruction: str, initial: np.ndarray, current: np.ndarray) -> Query:
    """Ask for the progress of ``current`` (0.0..1.0), showing the episode's ``initial`` frame."""
    return _interleave(PROGRESS, _PROGRESS_TEMPLATE, instruction, [initial, current],
                       strip=False)


def completion_query(instruction: str, current: np.ndarray) -> Query:
    """Ask whether the task is complete in ``current``."""
    return _interleave(COMPLETION, _COMPLETION_TEMPLATE, instruction, [current], strip=True)


class UnparseableAnswerError(ValueError):
    """The model's answer holds no valid answer to the question asked."""


def _last(pattern: str, answer: str, flags: int = 0) -> str | None:
    matches = re.findall(pattern, answer, flags)
    return matches[-1] if matches else None


def parse_contrastive(answer: str) -> int:
    """Return +1 if image B (the later frame) is more complete, -1 if image A is."""
    choice = _last(r'"more_complete_image"\s*:\s*"(ImageA|ImageB)"', answer)
    if choice is None:
        mentions = {token: answer.rfind(token) for token in ('ImageA', 'ImageB')}
        if max(mentions.values()) < 0:
            raise UnparseableAnswerError(f'no {CONTRASTIVE_KEY} ImageA/ImageB: {answer[-80:]!r}')
        choice = max(mentions, key=mentions.get)
    return 1 if choice == 'ImageB' else -1


def parse_progress(answer: str) -> float:
    """Return progress in 0.0..1.0 (numbers clamped, "NA" is 0.0)."""
    value = _last(r'"completion_progress"\s*:\s*"?\s*'
                  r'(NA|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\b', answer, re.IGNORECASE)
    if value is None:
        raise UnparseableAnswerError(f'no numeric {PROGRESS_KEY}: {answer[-80:]!r}')
    if value.upper() == 'NA':
        return 0.0
    number = float(value)
    if not math.isfinite(number):
        raise UnparseableAnswerError(f'{PROGRESS_KEY} is not finite: {value!r}')
    return min(1.0, max(0.0, number))


def parse_completion(answer: str) -> bool:
    """Return True for "yes", False for "no"."""
    value = _last(r'"task_completed"\s*:\s*"(yes|no)"', answer, re.IGNORECASE)
    if value is None:
        words = {w.lower() for w in re.findall(r'\b(yes|no)\b', answer, re.IGNORECASE)}
        if len(words) != 1:
            raise UnparseableAnswerError(f'no {COMPLETION_KEY} yes/no: {answer[-80:]!r}')
        value = words.pop()
    return value.lower() == 'yes'


@dataclass
class LrmAnswers:
    """One round of answers, neutral values already substituted for unparseable ones."""

    contrastive: int          # +1 later frame more complete, -1 earlier, 0 unknown
    progress: float           # 0..1
    complete: bool
    unparseable: tuple[str, ...] = ()   # names of the questions whose answers were replaced

    @property
    def tri(self) -> float:
        """LRM "tri" reward: mean of (contrastive + 1) / 2, progress and completion, in 0..1."""
        return ((self.contrastive + 1) / 2 + self.progress + float(self.complete)) / 3

    def reward(self, mode: str) -> float:
        """Return the reward of one mode (``tri`` or a single question) on a 0..1 scale."""
        if mode == 'tri':
            return self.tri
        if mode == CONTRASTIVE:
            return (self.contrastive + 1) / 2
        if mode == PROGRESS:
            return self.progress
        if mode == COMPLETION:
            return float(self.complete)
        raise ValueError(f'unknown LRM reward mode {mode!r}; use tri, {", ".join(QUESTIONS)}')


def interpret(raw: dict[str, str | None], previous_progress: float) -> LrmAnswers:
    """Parse the raw answers of one round; ``None`` marks a question that was not asked.

    An unasked contrastive question (the first query of an episode has no earlier frame) is
    neutral without counting as unparseable.
    """
    unparseable = []
    contrastive, progress, complete = 0, previous_progress, False
    if raw.get(CONTRASTIVE) is not None:
        try:
            contrastive = parse_contrastive(raw[CONTRASTIVE])
        except UnparseableAnswerError:
            unparseable.append(CONTRASTIVE)
    try:
        progress = parse_progress(raw.get(PROGRESS) or '')
    except UnparseableAnswerError:
        unparseable.append(PROGRESS)
    try:
        complete = parse_completion(raw.get(COMPLETION) or '')
    except UnparseableAnswerError:
        unparseable.append(COMPLETION)
    return LrmAnswers(contrastive, progress, complete, tuple(unparseable))
