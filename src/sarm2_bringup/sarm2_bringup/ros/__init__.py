"""ROS 2 parts of the bring-up package (bag player, RunEpisode client)."""
