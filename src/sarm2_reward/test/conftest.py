"""Fixtures shared by the labelling server's API and browser tests."""

import pytest

from label_server_harness import make_rollout_dir, RunningServer


@pytest.fixture
def label_server(tmp_path):
    """Run a server on a fresh copy of the recorded rollout (plus one broken bag)."""
    server = RunningServer(make_rollout_dir(tmp_path / 'data'))
    yield server
    server.stop()
