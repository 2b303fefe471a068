"""ROS 2 helpers shared by every node: QoS, lifecycle, parameters, conversions."""
