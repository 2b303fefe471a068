"""SPIRAL policy improvement, VLA policies, safety filter, recorder and policy node."""
