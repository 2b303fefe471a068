"""A labelling server on a copy of the recorded rollout bag, for the API and browser tests.

``data/rollout_bag/`` is a real rollout, unmodified: recorded by the policy node (compact VLA
trained by a small `make demo` run) with sim_node and reward_node running, drawer-open-v3, seed
10000, ended at the step limit (100 steps at 20 Hz). It holds the camera frames the policy saw,
the live ``/sarm2/stage_reward`` messages and the ``/episode/metadata`` records (policy id,
outcome).
"""

import http.client
import json
from pathlib import Path
import shutil
import threading

from sarm2_reward.label_server import make_server

DATA = Path(__file__).resolve().parent / 'data'
ROLLOUT_BAG = DATA / 'rollout_bag'
ROLLOUT_NAME = 'rollouts/' + ROLLOUT_BAG.name
BROKEN_NAME = 'rollouts/broken'


def make_rollout_dir(root: Path) -> Path:
    """``root`` with a copy of the recorded rollout and an unreadable bag beside it."""
    shutil.copytree(ROLLOUT_BAG, root / ROLLOUT_NAME)
    broken = root / BROKEN_NAME
    broken.mkdir()
    (broken / 'broken.mcap').write_bytes(b'\x00' * 64)
    (broken / 'metadata.yaml').write_text('rosbag2_bagfile_information: {}\n')
    return root


class RunningServer:
    """The server on a free port in a background thread; ``request`` speaks its JSON API."""

    def __init__(self, root: Path):
        self.root = root
        self.server = make_server(root, '127.0.0.1', 0)
        self.url = self.server.url
        self.port = self.server.server_address[1]
        # A short poll interval: shutdown() returns within it.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def request(self, method: str, path: str, body=None, headers=None, raw: bytes = None):
        """Return (status, parsed JSON or bytes, headers)."""
        connection = http.client.HTTPConnection('127.0.0.1', self.port, timeout=30)
        try:
            data = raw if raw is not None else (None if body is None
                                                else json.dumps(body).encode())
            sent = {'Content-Type': 'application/json'} if data is not None else {}
            sent.update(headers or {})
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            payload = response.read()
            if response.getheader('Content-Type', '') == 'application/json':
                payload = json.loads(payload)
            return response.status, payload, dict(response.getheaders())
        finally:
            connection.close()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
