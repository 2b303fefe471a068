"""Adapters that let policies users already have drive the arm through ``VlaPolicy``."""
