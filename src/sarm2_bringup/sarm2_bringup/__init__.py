"""Bring-up of the SARM2 stack: launch files, configs, the demo, the SPIRAL loop."""
