"""ROS 2 adapters of sarm2_reward: nodes and message conversions (the only rclpy users)."""
