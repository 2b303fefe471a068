"""Node parameters described once, on the node's config dataclass (ROS-free).

Every node of the stack keeps its settings in a dataclass config; each field is declared with
``parameter(default, description, ...)``, which records what a ROS parameter needs (description,
range or allowed values, read-only, when a change takes effect) in the field's metadata, as
generate_parameter_library does from its YAML schema. ``sarm2_common.ros.parameters`` turns
such a dataclass into declared ROS parameters; this module is the part tests and offline tools
use without rclpy:

- ``check_fields(config)`` (call it first in ``__post_init__``) turns lists into tuples and
  rejects non-finite numbers, values outside a range and values that are not allowed, naming
  the parameter;
- ``coerce_value(cls, name, value)`` takes a value as ROS parameters deliver it (YAML ints for
  float fields, lists for tuples) and returns it as the field's type, or raises naming the
  parameter and the expected type.
"""

from dataclasses import dataclass, field, fields, MISSING
import math
import typing

# When a change of a parameter takes effect.
NOW = 'now'                    # at once (validated, then applied)
ON_CONFIGURE = 'configure'     # lifecycle nodes: at the next configure
NEXT_EPISODE = 'episode'       # at the start of the next episode
AT_STARTUP = 'startup'         # read-only: set it in the params file or on the command line
APPLIES = (NOW, ON_CONFIGURE, NEXT_EPISODE, AT_STARTUP)
SCALAR_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class ParameterSpec:
    """What a parameter is: description, bounds (inclusive) or choices, when it applies."""

    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    applies: str = NOW

    @property
    def read_only(self) -> bool:
        return self.applies == AT_STARTUP


def parameter(default, description: str, *, low=None, high=None, choices=(),
              applies: str = NOW):
    """Declare a config field that is also a node parameter (use as the field's default)."""
    if applies not in APPLIES:
        raise ValueError(f'applies={applies!r}; choose one of {APPLIES}')
    spec = ParameterSpec(description, low, high, tuple(choices), applies)
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata={'parameter': spec})
    return field(default=default, metadata={'parameter': spec})


def parameter_fields(cls) -> list:
    """Return the dataclass fields of ``cls`` that are parameters, in declaration order."""
    return [f for f in fields(cls) if 'parameter' in f.metadata]


def parameter_names(cls) -> list[str]:
    """Return the names of the parameters of the config class ``cls``."""
    return [f.name for f in parameter_fields(cls)]


def spec(cls, name: str) -> ParameterSpec:
    """Return the ``ParameterSpec`` of parameter ``name`` of ``cls``."""
    for f in parameter_fields(cls):
        if f.name == name:
            return f.metadata['parameter']
    raise KeyError(name)


def field_type(cls, name: str):
    """Return (kind, element): kind is bool, int, float, str or tuple; element a tuple's type."""
    hints = typing.get_type_hints(cls)
    annotation = hints[name]
    if typing.get_origin(annotation) is tuple:
        return tuple, typing.get_args(annotation)[0]
    if annotation not in SCALAR_TYPES:
        raise TypeError(f'{cls.__name__}.{name}: parameters are bool, int, float, str or '
                        f'tuple[...], not {annotation}')
    return annotation, None


def default_value(f):
    """Return the default of dataclass field ``f``."""
    return f.default_factory() if f.default is MISSING else f.default


def coerce_value(cls, name: str, value):
    """Return ``value`` as the type of parameter ``name``; ValueError naming what is wrong.

    Accepted conversions are the lossless ones YAML and the command line produce: an integer
    for a float parameter, a list for a tuple parameter (integers for float elements), and an
    empty list of any type for an empty tuple.
    """
    kind, element = field_type(cls, name)
    if kind is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f'parameter {name}: expected a list of {element.__name__}, got '
                             f'{value!r}')
        return tuple(_coerce_scalar(name, element, item, f'{name}[{i}]')
                     for i, item in enumerate(value))
    return _coerce_scalar(name, kind, value, name)


def _coerce_scalar(name: str, kind, value, where: str):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise ValueError(f'parameter {where}: expected {kind.__name__}, got '
                         f'{type(value).__name__} {value!r}')
    return value


def check_fields(config) -> None:
    """Turn lists into tuples; reject non-finite, out-of-range and disallowed values."""
    for f in parameter_fields(type(config)):
        value = getattr(config, f.name)
        if isinstance(value, list):
            value = tuple(value)
            setattr(config, f.name, value)
        parameter_spec = f.metadata['parameter']
        for item in value if isinstance(value, tuple) else (value,):
            _check_item(f.name, parameter_spec, item)


def _check_item(name: str, parameter_spec: ParameterSpec, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f'parameter {name}: {value} is not a finite number')
    if parameter_spec.choices and value not in parameter_spec.choices:
        raise ValueError(f'parameter {name}: {value!r}; choose one of '
                         f'{list(parameter_spec.choices)}')
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = parameter_spec.low, parameter_spec.high
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f'parameter {name}: {value} is outside [{low}, {high}]')
