"""The openpi websocket client against a real websocket server speaking the openpi protocol."""

import threading

import numpy as np
import pytest
from websockets.sync.server import serve

from spiral_policy.adapters.openpi_client import (OpenPiClientConfig, OpenPiWebsocketPolicy,
                                                  packb, unpackb)
from spiral_policy.vla import PolicyObservation, VlaPolicy


class OpenPiServer:
    """A real websocket server doing what openpi's WebsocketPolicyServer does.

    Sends metadata on connect, answers each msgpack observation with a msgpack dict holding a
    [10, 7] action horizon computed from the request, or a text error frame for prompt 'fail'.
    """

    def __init__(self):
        self.requests = []
        self.server = serve(self._session, 'localhost', 0, compression=None, max_size=None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _session(self, websocket):
        websocket.send(packb({'policy_name': 'tiny_pi', 'action_horizon': 10}))
        for message in websocket:
            obs = unpackb(message)
            self.requests.append(obs)
            if obs['prompt'] == 'fail':
                websocket.send('Traceback: the model exploded')
                continue
            state = obs['observation/state']
            brightness = float(obs['observation/image'].mean()) / 255.0
            actions = np.zeros((10, 7), np.float64)
            actions[:, 0] = np.arange(10)
            actions[:, 1] = state[0]
            actions[:, 2] = brightness
            websocket.send(packb({'actions': actions, 'server_timing': {'infer_ms': 1.0}}))

    def close(self):
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture
def server():
    srv = OpenPiServer()
    yield srv
    srv.close()


def test_round_trip_over_a_real_websocket(server):
    policy = OpenPiWebsocketPolicy(OpenPiClientConfig(port=server.port, image_size=32,
                                                      action_dim=4, chunk_size=5))
    assert isinstance(policy, VlaPolicy)
    assert policy.server_metadata['action_horizon'] == 10
    assert policy.policy_id.endswith('/tiny_pi')
    obs = PolicyObservation({'corner': np.full((64, 64, 3), 51, np.uint8)},
                            np.array([0.25] + [0.0] * 8), 'push the puck to the goal')
    chunk = policy.select_action(obs)
    assert chunk.dtype == np.float32 and chunk.shape == (5, 4)
    np.testing.assert_allclose(chunk[:, 0], np.arange(5))
    np.testing.assert_allclose(chunk[:, 1], 0.25)
    np.testing.assert_allclose(chunk[:, 2], 0.2, atol=1e-6)
    request = server.requests[-1]
    assert request['prompt'] == 'push the puck to the goal'
    assert request['observation/image'].shape == (32, 32, 3)
    assert request['observation/image'].dtype == np.uint8
    assert request['observation/state'].dtype == np.float32
    with pytest.raises(RuntimeError, match='exploded'):
        policy.select_action(PolicyObservation(obs.images, obs.joint_positions, 'fail'))
    policy.close()


def test_channels_first_and_missing_camera(server):
    policy = OpenPiWebsocketPolicy(OpenPiClientConfig(port=server.port, image_size=16,
                                                      channels_first=True))
    obs = PolicyObservation({'corner': np.zeros((20, 20, 3), np.uint8)}, np.zeros(9), 'x')
    assert policy.observation_dict(obs)['observation/image'].shape == (3, 16, 16)
    with pytest.raises(ValueError, match='lacks camera'):
        policy.observation_dict(PolicyObservation({'wrist': obs.images['corner']},
                                                  np.zeros(9), 'x'))
    policy.close()


def test_unreachable_server_names_the_address():
    with pytest.raises(ConnectionError, match='localhost:1'):
        OpenPiWebsocketPolicy(OpenPiClientConfig(port=1, open_timeout=2.0))


def test_wire_format_round_trip():
    data = {'a': np.arange(6, dtype=np.int16).reshape(2, 3), 'b': np.float32(1.5), 'c': 'text'}
    back = unpackb(packb(data))
    np.testing.assert_array_equal(back['a'], data['a'])
    assert back['a'].dtype == np.int16 and back['b'] == np.float32(1.5) and back['c'] == 'text'
