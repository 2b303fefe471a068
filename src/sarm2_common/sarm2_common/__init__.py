"""Shared helpers of the SARM2 stack: bag I/O, episode format, vocabulary, images, tasks."""
