"""Checks on the ROS graph around a node (operator mistakes worth a warning)."""


def warn_if_name_taken(node, first) -> bool:
    """Warn (once, when ``first(key)`` says so) if another node runs under this node's name.

    Two reward nodes (or two policy nodes) with one name share every ``~/`` service and
    parameter name: calls reach either of them at random. Called from a periodic timer, since
    peers appear as discovery proceeds. Returns whether the name is taken.
    """
    name, namespace = node.get_name(), node.get_namespace()
    twins = sum(1 for other in node.get_node_names_and_namespaces()
                if other == (name, namespace))
    if twins > 1 and first('duplicate_node_name'):
        full = f'{namespace.rstrip("/")}/{name}'
        node.get_logger().warn(f'{twins} nodes are named {full} in this ROS domain: their '
                               'services and parameters collide; give each a unique name '
                               '(--ros-args -r __node:=<name>)')
    return twins > 1
