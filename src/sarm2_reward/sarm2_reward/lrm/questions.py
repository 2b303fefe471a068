"""The three LRM questions: prompts, strict answer parsing, and the reward they make.

Answers must be one JSON object (optionally inside a single ```json fence), with exactly the
expected key and an allowed value. Anything else is *unparseable*: it is counted by the caller and
replaced by a documented neutral value, so a confused model never invents a reward:

- contrastive: 0 (no preference between the frames), i.e. 0.5 on the 0..1 scale;
- progress: the last parsed progress of the episode (0.0 before any), i.e. "no news";
- completion: "no" (0.0): garbage must never declare success and end an episode.
"""

from dataclasses import dataclass
import json
import math
import re

CONTRASTIVE = 'contrastive'
PROGRESS = 'progress'
COMPLETION = 'completion'
QUESTIONS = (CONTRASTIVE, PROGRESS, COMPLETION)

_FENCE = re.compile(r'^```(?:json)?\s*(.*?)\s*```$', re.DOTALL)


def contrastive_prompt(instruction: str) -> str:
    """Ask which of two frames (earlier first, later second) shows the task more complete."""
    return (
        f'The robot is performing the task: "{instruction}".\n'
        'Image 1 was taken earlier and image 2 later in the same episode. '
        'Which image shows the task closer to completion?\n'
        'Answer with only a JSON object: {"more_complete": "first"} or '
        '{"more_complete": "second"}.')


def progress_prompt(instruction: str) -> str:
    """Ask for task progress in the current frame on a 0.0..1.0 grid of 0.1."""
    return (
        f'The robot is performing the task: "{instruction}".\n'
        'How much of the task is done in this image? Use 0.0 for not started and 1.0 for done, '
        'in steps of 0.1.\n'
        'Answer with only a JSON object such as {"progress": 0.3}.')


def completion_prompt(instruction: str) -> str:
    """Ask whether the task is complete in the current frame."""
    return (
        f'The robot is performing the task: "{instruction}".\n'
        'Is the task complete in this image?\n'
        'Answer with only a JSON object: {"complete": "yes"} or {"complete": "no"}.')


PROMPTS = {CONTRASTIVE: contrastive_prompt, PROGRESS: progress_prompt,
           COMPLETION: completion_prompt}


class UnparseableAnswerError(ValueError):
    """The model's answer is not the JSON the question asked for."""


def _json_object(answer: str, key: str):
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise UnparseableAnswerError(f'not JSON ({error.msg}): {answer[:80]!r}') from None
    if not isinstance(parsed, dict) or set(parsed) != {key}:
        raise UnparseableAnswerError(f'expected an object with the single key {key!r}: '
                                f'{answer[:80]!r}')
    return parsed[key]


def parse_contrastive(answer: str) -> int:
    """Return +1 if the later frame is more complete, -1 if the earlier one is."""
    value = _json_object(answer, 'more_complete')
    if value == 'second':
        return 1
    if value == 'first':
        return -1
    raise UnparseableAnswerError(f'more_complete must be "first" or "second", got {value!r}')


def parse_progress(answer: str) -> float:
    """Return progress in 0.0..1.0, which must lie on the 0.1 grid."""
    value = _json_object(answer, 'progress')
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UnparseableAnswerError(f'progress must be a number, got {value!r}')
    if not 0.0 <= value <= 1.0 or abs(value * 10 - round(value * 10)) > 1e-6:
        raise UnparseableAnswerError(f'progress must be one of 0.0, 0.1, ..., 1.0, got {value!r}')
    return round(float(value), 1)


def parse_completion(answer: str) -> bool:
    """Return True for "yes", False for "no"."""
    value = _json_object(answer, 'complete')
    if value in ('yes', 'no'):
        return value == 'yes'
    raise UnparseableAnswerError(f'complete must be "yes" or "no", got {value!r}')


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

    An unasked contrastive question (the first frame of an episode has no earlier frame) is
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
