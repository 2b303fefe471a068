"""ROS 2 adapters of sarm2_sim: nodes and message conversions (the only rclpy users)."""
