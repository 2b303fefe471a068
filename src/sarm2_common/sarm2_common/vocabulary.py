"""The shared action-primitive vocabulary and its gate groups.

SARM2 describes every task as a sequence of primitives drawn from one vocabulary, so stage labels
transfer across tasks without per-task annotation. The vocabulary is SARM2's 21 primitives plus
the null class, grouped into 8 gate groups, extended by one primitive:

``reach`` (free-space approach to an object, group ``other``). Meta-World's scripted experts, like
most real demonstrations, spend a third to a half of every episode moving towards the object.
Labelling those frames ``null`` would make null the majority class and erase the difference
between "approaching" and "idle/done", which the value head needs. ``reach`` joins the ``other``
group rather than a new one so the value head keeps the paper's 8 gates.

Ids are positions in ``PRIMITIVES`` and ``GROUPS``; they are part of checkpoints and messages, so
append new entries at the end, never reorder.
"""

from dataclasses import dataclass

GROUP_MEMBERS: dict[str, tuple[str, ...]] = {
    'acquire': ('pick_grab', 'scoop', 'pull'),
    'release': ('place', 'pour_dump'),
    'translate': ('erase', 'zip_unzip', 'sweep', 'pass'),
    'insert': ('install', 'insert'),
    'shape_cloth': ('fold_flatten', 'hang'),
    'rotate': ('rotate_turn', 'screw_unscrew', 'tie', 'wrap', 'untie', 'roll'),
    'force': ('press', 'clamp'),
    'other': ('null', 'reach'),
}

GROUPS: tuple[str, ...] = tuple(GROUP_MEMBERS)
PRIMITIVES: tuple[str, ...] = tuple(p for members in GROUP_MEMBERS.values() for p in members)
NULL_PRIMITIVE = 'null'

NUM_PRIMITIVES = len(PRIMITIVES)
NUM_GROUPS = len(GROUPS)

_PRIMITIVE_INDEX = {name: i for i, name in enumerate(PRIMITIVES)}
_GROUP_INDEX = {name: i for i, name in enumerate(GROUPS)}
# primitive id -> group id, as a plain tuple so models can turn it into a lookup tensor.
PRIMITIVE_TO_GROUP: tuple[int, ...] = tuple(
    _GROUP_INDEX[group] for group, members in GROUP_MEMBERS.items() for _ in members)


@dataclass(frozen=True)
class Primitive:
    """One vocabulary entry with its ids."""

    id: int
    name: str
    group_id: int
    group_name: str


def primitive_id(name: str) -> int:
    """Return the id of primitive ``name``; raise ValueError naming the vocabulary if unknown."""
    try:
        return _PRIMITIVE_INDEX[name]
    except KeyError:
        raise ValueError(
            f'unknown primitive {name!r}; the vocabulary is: {", ".join(PRIMITIVES)}') from None


def group_id(name: str) -> int:
    """Return the id of group ``name``; raise ValueError if unknown."""
    try:
        return _GROUP_INDEX[name]
    except KeyError:
        raise ValueError(f'unknown group {name!r}; groups are: {", ".join(GROUPS)}') from None


def primitive(id_or_name: int | str) -> Primitive:
    """Look a primitive up by id or name."""
    pid = primitive_id(id_or_name) if isinstance(id_or_name, str) else int(id_or_name)
    if not 0 <= pid < NUM_PRIMITIVES:
        raise ValueError(f'primitive id {pid} out of range 0..{NUM_PRIMITIVES - 1}')
    gid = PRIMITIVE_TO_GROUP[pid]
    return Primitive(pid, PRIMITIVES[pid], gid, GROUPS[gid])
