"""Client for a remote policy server speaking the openpi websocket protocol (pi0, pi0.5, ...).

Protocol (openpi ``serve_policy.py`` / ``openpi_client.websocket_client_policy``): one websocket
connection per client; on connect the server sends its metadata; then for every inference the
client sends one binary msgpack message holding the observation dict and receives one msgpack
message holding at least ``actions`` (float [horizon, action_dim]); a text frame instead of
bytes carries a server-side error. NumPy arrays travel as msgpack maps
``{b'__ndarray__': True, b'data': raw bytes, b'dtype': dtype.str, b'shape': shape}`` (scalars as
``{b'__npgeneric__': True, b'data': item, b'dtype': dtype.str}``).

The ``openpi-client`` package pins numpy<2, which cannot coexist with the ROS wheels' numpy 2,
so this module speaks the same protocol with ``websockets`` + ``msgpack`` directly instead of
importing it. Observation keys differ per deployment (LIBERO: ``observation/image``,
``observation/state``, ``prompt``; DROID, ALOHA: others), so they are configured, not assumed.
"""

from dataclasses import dataclass, field
import functools

import msgpack
import numpy as np
from websockets.sync.client import connect

from spiral_policy.preprocessing import resize_image
from spiral_policy.vla import check_chunk, PolicyObservation


def pack_array(obj):
    """Encode numpy arrays and scalars in openpi's wire format."""
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in ('V', 'O', 'c'):
        raise ValueError(f'unsupported dtype for the openpi wire format: {obj.dtype}')
    if isinstance(obj, np.ndarray):
        return {b'__ndarray__': True, b'data': obj.tobytes(), b'dtype': obj.dtype.str,
                b'shape': obj.shape}
    if isinstance(obj, np.generic):
        return {b'__npgeneric__': True, b'data': obj.item(), b'dtype': obj.dtype.str}
    return obj


def unpack_array(obj):
    """Decode what ``pack_array`` encoded (msgpack ``object_hook``)."""
    if b'__ndarray__' in obj:
        return np.ndarray(buffer=obj[b'data'], dtype=np.dtype(obj[b'dtype']),
                          shape=obj[b'shape'])
    if b'__npgeneric__' in obj:
        return np.dtype(obj[b'dtype']).type(obj[b'data'])
    return obj


packb = functools.partial(msgpack.packb, default=pack_array)
unpackb = functools.partial(msgpack.unpackb, object_hook=unpack_array)


@dataclass
class OpenPiClientConfig:
    """Where the server is and how our observation maps onto its keys."""

    host: str = 'localhost'
    port: int = 8000
    image_keys: dict[str, str] = field(
        default_factory=lambda: {'corner': 'observation/image'})   # camera -> server key
    state_key: str = 'observation/state'
    prompt_key: str = 'prompt'
    image_size: int = 224          # square resize on the client, as openpi's examples do
    channels_first: bool = False   # ALOHA-style servers expect CHW images
    action_dim: int = 4            # leading action dimensions this arm uses
    chunk_size: int = 10           # leading actions of the returned horizon to use
    api_key: str = ''
    open_timeout: float = 10.0     # s

    def __post_init__(self):
        if not self.image_keys:
            raise ValueError('image_keys: map at least one camera to a server key')
        if not 0 < self.port < 65536:
            raise ValueError(f'port {self.port} out of range')
        if self.image_size < 1 or self.action_dim < 1 or self.chunk_size < 1:
            raise ValueError('image_size, action_dim and chunk_size must be >= 1')


class OpenPiWebsocketPolicy:
    """``VlaPolicy`` backed by a remote openpi policy server."""

    def __init__(self, config: OpenPiClientConfig):
        self.config = config
        self.action_dim = config.action_dim
        self.chunk_size = config.chunk_size
        headers = {'Authorization': f'Api-Key {config.api_key}'} if config.api_key else None
        uri = f'ws://{config.host}:{config.port}'
        try:
            self._ws = connect(uri, compression=None, max_size=None,
                               additional_headers=headers, open_timeout=config.open_timeout,
                               legacy=True)  # a long-lived connection, not a with-block
        except (OSError, TimeoutError) as error:
            raise ConnectionError(f'cannot reach the openpi policy server at {uri}: '
                                  f'{error}') from error
        self.server_metadata = unpackb(self._ws.recv())
        name = self.server_metadata.get('policy_name') or self.server_metadata.get('name')
        self.policy_id = f'openpi@{config.host}:{config.port}' + (f'/{name}' if name else '')

    def reset(self) -> None:
        """Do nothing: the openpi protocol keeps no per-episode state on the client."""

    def observation_dict(self, obs: PolicyObservation) -> dict:
        """Build the request body for ``obs`` (exposed for tests and debugging)."""
        request = {}
        for camera, key in self.config.image_keys.items():
            if camera not in obs.images:
                raise ValueError(f'observation lacks camera {camera!r} (configured for '
                                 f'{key!r}); it has {sorted(obs.images)}')
            image = resize_image(obs.images[camera], self.config.image_size)
            if self.config.channels_first:
                image = np.ascontiguousarray(image.transpose(2, 0, 1))
            request[key] = image
        request[self.config.state_key] = obs.joint_positions.astype(np.float32)
        request[self.config.prompt_key] = obs.instruction
        return request

    def select_action(self, obs: PolicyObservation) -> np.ndarray:
        """Send ``obs``, return the first ``chunk_size`` actions the server predicts."""
        self._ws.send(packb(self.observation_dict(obs)))
        response = self._ws.recv()
        if isinstance(response, str):
            raise RuntimeError(f'openpi policy server error: {response}')
        result = unpackb(response)
        if 'actions' not in result:
            raise RuntimeError(f'openpi server reply has no "actions" (keys {sorted(result)})')
        actions = np.asarray(result['actions'], dtype=np.float32)
        if actions.ndim != 2 or actions.shape[1] < self.action_dim:
            raise RuntimeError(f'openpi server returned actions of shape {actions.shape}; '
                               f'expected [horizon, >= {self.action_dim}]')
        return check_chunk(actions[:self.chunk_size, :self.action_dim], self.chunk_size,
                           self.action_dim)

    def close(self) -> None:
        """Close the websocket."""
        self._ws.close()
