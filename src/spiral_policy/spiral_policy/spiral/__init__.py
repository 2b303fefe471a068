"""SPIRAL: residual off-policy actor-critic on a frozen base VLA, improved from scored rollouts."""
