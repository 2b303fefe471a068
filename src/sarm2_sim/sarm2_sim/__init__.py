"""Simulated arm (Meta-World) speaking real-arm ROS 2 topics, and demonstration recorder."""
