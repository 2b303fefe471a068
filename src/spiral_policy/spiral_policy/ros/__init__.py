"""ROS 2 adapters of spiral_policy: nodes and message conversions (the only rclpy users)."""
