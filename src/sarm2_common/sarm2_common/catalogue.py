"""The task catalogue: tasks, their instructions and primitive sequences (package data).

``tasks.yaml`` ships inside this package, so every node (on a robot without the simulator too)
finds a task's instruction; the simulated arm also reads its Meta-World settings from it.
"""

from dataclasses import dataclass
from pathlib import Path

from sarm2_common.vocabulary import primitive_id
import yaml

SPLITS = ('train', 'heldout')
CATALOGUE_FILE = 'tasks.yaml'


@dataclass(frozen=True)
class TaskSpec:
    """One catalogue entry (see the comments in tasks.yaml for the fields)."""

    name: str
    instruction: str
    primitives: tuple[str, ...]
    split: str
    expert_success_rate: float
    expert: str = ''
    release_retreat: tuple[float, float, float] | None = None
    goal_on_table: bool = False

    def __post_init__(self):
        if not self.instruction.strip():
            raise ValueError(f'task {self.name!r}: empty instruction')
        if not self.primitives:
            raise ValueError(f'task {self.name!r}: no primitives')
        for name in self.primitives:
            primitive_id(name)
        if self.split not in SPLITS:
            raise ValueError(f'task {self.name!r}: split {self.split!r} is not one of {SPLITS}')
        if not 0.0 <= self.expert_success_rate <= 1.0:
            raise ValueError(f'task {self.name!r}: expert_success_rate must be in 0..1')
        if self.release_retreat is not None and len(self.release_retreat) != 3:
            raise ValueError(f'task {self.name!r}: release.retreat must have 3 numbers')


def default_catalogue_path() -> Path:
    """Return the path of the catalogue shipped with this package."""
    return Path(__file__).resolve().parent / CATALOGUE_FILE


def load_catalogue(path: str | Path | None = None) -> dict[str, TaskSpec]:
    """Read the task catalogue; raise ValueError naming the file and entry on bad content."""
    path = Path(path) if path is not None else default_catalogue_path()
    with open(path, encoding='utf-8') as stream:
        document = yaml.safe_load(stream)
    if not isinstance(document, dict) or not isinstance(document.get('tasks'), dict):
        raise ValueError(f'{path}: expected a mapping with a "tasks" mapping')
    catalogue = {}
    for name, entry in document['tasks'].items():
        try:
            release = entry.get('release')
            catalogue[name] = TaskSpec(
                name=name,
                instruction=str(entry['instruction']),
                primitives=tuple(entry['primitives']),
                split=str(entry.get('split', 'train')),
                expert_success_rate=float(entry['expert_success_rate']),
                expert=str(entry.get('expert', '')),
                release_retreat=(tuple(float(v) for v in release['retreat'])
                                 if release else None),
                goal_on_table=bool(entry.get('goal_on_table', False)))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f'{path}: task {name!r}: {error}') from None
    return catalogue


def task_names(catalogue: dict[str, TaskSpec], split: str | None = None) -> list[str]:
    """Names of the catalogue's tasks in file order, optionally only one split."""
    return [name for name, spec in catalogue.items() if split is None or spec.split == split]


def check_tasks(tasks, catalogue: dict[str, TaskSpec] | None = None) -> tuple[str, ...]:
    """Return ``tasks`` as a tuple; ValueError naming the unknown ones (or none given)."""
    catalogue = load_catalogue() if catalogue is None else catalogue
    tasks = tuple(tasks)
    unknown = [task for task in tasks if task not in catalogue]
    if not tasks or unknown:
        raise ValueError(f'unknown task(s) {unknown or "(none given)"}; the catalogue has: '
                         f'{", ".join(catalogue)}')
    return tasks


def catalogue_instruction(task: str) -> str:
    """Return the catalogue's instruction for ``task``, or '' when the task is not in it."""
    spec = load_catalogue().get(task)
    return spec.instruction if spec is not None else ''
