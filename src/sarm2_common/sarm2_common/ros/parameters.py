"""Declare a node's ROS parameters from its config dataclass, one way for every node.

The config dataclass describes each parameter (``sarm2_common.node_parameters.parameter``); this
module declares them with full descriptors (type, description, range, allowed values, read-only,
when a change applies), checks the values given at startup (params file, ``-p``) and keeps
``NodeParameters.config`` current afterwards:

- at startup, an unknown parameter (a typo in the params file), a value of the wrong type
  (``-p control_rate:=fast``), a non-finite number or a value the config rejects stops the node:
  ``ParameterError`` names every problem at once (``spin_node`` prints it as one line, exit 2);
- later changes (``ros2 param set``) are validated in the on-set callback by building the whole
  config with the new values (nothing is applied there), and applied in the post-set callback,
  which also tells the node what changed.

rclpy keeps the startup overrides in ``Node._parameter_overrides`` (the only place undeclared
names are visible); that attribute has been stable from Humble to Kilted.
"""

import difflib

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.parameter import Parameter
from sarm2_common.node_parameters import (coerce_value, default_value, field_type,
                                          NEXT_EPISODE, ON_CONFIGURE, parameter_fields,
                                          parameter_names)

# Parameters every rclpy node may receive that no config declares.
_ROS_PARAMETERS = ('use_sim_time', 'start_type_description_service')
_ROS_PREFIXES = ('qos_overrides.',)
_SCALAR_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                 float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
_ARRAY_TYPES = {bool: Parameter.Type.BOOL_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                float: Parameter.Type.DOUBLE_ARRAY, str: Parameter.Type.STRING_ARRAY}
_WHEN = {ON_CONFIGURE: 'applied on the next configure',
         NEXT_EPISODE: 'applied at the start of the next episode'}


class ParameterError(ValueError):
    """The node's startup parameters are wrong; the message names each problem."""


class NodeParameters:
    """The parameters of ``node``, declared from ``config_class``; ``config`` is kept current.

    ``on_change(config, names)`` (optional) runs after a successful change, with the names
    that changed. Keep the instance in an attribute that does not shadow rclpy's own
    (``Node._parameters`` is rclpy's table of declared parameters): ``_node_parameters``.
    """

    def __init__(self, node, config_class, on_change=None):
        self._node = node
        self._class = config_class
        self._on_change = on_change
        self._names = parameter_names(config_class)
        self.config = self._startup_config()
        for f in parameter_fields(config_class):
            value = getattr(self.config, f.name)
            if isinstance(value, tuple):
                kind, element = field_type(config_class, f.name)
                # rclpy types an empty list as a byte array: declare the type, leave it unset.
                value = list(value) if value else _ARRAY_TYPES[element]
            node.declare_parameter(f.name, value, self._descriptor(f), ignore_override=True)
        node.add_on_set_parameters_callback(self._validate)
        node.add_post_set_parameters_callback(self._apply)

    # ---- startup -------------------------------------------------------------------------
    def _startup_config(self):
        overrides = {name: p.value for name, p in self._node._parameter_overrides.items()}
        problems = []
        for name in sorted(overrides):
            if name in self._names or name in _ROS_PARAMETERS or name.startswith(_ROS_PREFIXES):
                continue
            guess = difflib.get_close_matches(name, self._names, n=1)
            problems.append(f'unknown parameter {name!r}'
                            + (f' (did you mean {guess[0]!r}?)' if guess else ''))
        values = {}
        for f in parameter_fields(self._class):
            values[f.name] = default_value(f)
            if f.name in overrides:
                try:
                    values[f.name] = coerce_value(self._class, f.name, overrides[f.name])
                except ValueError as error:
                    problems.append(str(error))
        if not problems:
            try:
                return self._class(**values)
            except (ValueError, TypeError) as error:
                problems.append(str(error))
        raise ParameterError(f'{self._node.get_name()}: ' + '; '.join(problems))

    def _descriptor(self, f) -> ParameterDescriptor:
        spec = f.metadata['parameter']
        kind, element = field_type(self._class, f.name)
        descriptor = ParameterDescriptor(name=f.name, description=spec.description,
                                         read_only=spec.read_only)
        if kind is tuple:
            descriptor.type = _ARRAY_TYPES[element].value
        else:
            descriptor.type = _SCALAR_TYPES[kind]
        constraints = []
        if spec.choices:
            constraints.append('one of: ' + ', '.join(str(c) for c in spec.choices))
        if spec.applies in _WHEN:
            constraints.append(_WHEN[spec.applies])
        descriptor.additional_constraints = '; '.join(constraints)
        if kind in (int, float) and spec.low is not None and spec.high is not None:
            if kind is int:
                descriptor.integer_range = [IntegerRange(from_value=int(spec.low),
                                                         to_value=int(spec.high))]
            else:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(spec.low), to_value=float(spec.high))]
        return descriptor

    # ---- changes at run time -----------------------------------------------------------------
    def _candidate(self, parameters):
        updates = {p.name: p.value for p in parameters if p.name in self._names}
        if not updates:
            return None, {}
        values = {name: getattr(self.config, name) for name in self._names}
        for name, value in updates.items():
            values[name] = coerce_value(self._class, name, value)
        return self._class(**values), updates

    def _validate(self, parameters) -> SetParametersResult:
        try:
            self._candidate(parameters)
        except (ValueError, TypeError) as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _apply(self, parameters) -> None:
        candidate, updates = self._candidate(parameters)
        if candidate is None:
            return
        self.config = candidate
        if self._on_change is not None:
            self._on_change(candidate, sorted(updates))
