"""SARM2 stage-aware reward model and live reward node."""
