"""The reward node as a separate OS process over real DDS: rewards out, bad input survived.

The node runs from its installed console script; this test process plays the camera, the arm
and the policy node (episode status) and listens to everything the node publishes.
"""

import json
from pathlib import Path
import sys
import time
import uuid

import numpy as np
import pytest

from ros_harness import CONFIG_DIR, console_script, NodeLauncher, PeerProcess

# The fake VLM server of the LRM unit tests, reused for the LRM backend in a node process.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'src' / 'sarm2_reward' / 'test'))

REPO = Path(__file__).resolve().parents[1]
NODE = REPO / 'install' / 'sarm2_reward' / 'lib' / 'sarm2_reward' / 'reward_node'
JOINT_NAMES = [f'joint_{i}' for i in range(7)] + ['finger_left', 'finger_right']
TINY = {'image_size': 32, 'cnn_channels': (4, 8), 'frame_embed_dim': 16, 'd_model': 16,
        'n_heads': 2, 'stage_layers': 1, 'value_layers': 1, 'num_experts': 4, 'top_k': 2,
        'expert_hidden': 8}

pytestmark = pytest.mark.ros


@pytest.fixture
def start_node(tmp_path):
    """Start reward node processes; stop them (and show their logs on failure) afterwards."""
    launcher = NodeLauncher(tmp_path)

    def start(*params, name='reward_node'):
        # Every test starts from the shipped parameter file, so it is proven to load.
        return launcher.start(NODE, name=name, params=params,
                              params_file=CONFIG_DIR / 'reward_node.yaml')

    yield start
    launcher.stop_all()


@pytest.fixture(scope='module')
def ros():
    import rclpy

    rclpy.init()
    node = rclpy.create_node(f'reward_node_test_{uuid.uuid4().hex[:6]}')
    yield node
    node.destroy_node()
    rclpy.shutdown()


class Probe:
    """Plays camera/arm/policy to the reward node and records everything it publishes."""

    def __init__(self, node, cameras=('corner',), target='reward_node', reliable=False):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sarm2_msgs.msg import EpisodeStatus, StageReward
        from sarm2_common.ros.qos import LATCHED, RELIABLE, SENSOR_DATA
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float32
        from visualization_msgs.msg import MarkerArray

        self.node = node
        self.target = target
        sensor = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE) if reliable \
            else SENSOR_DATA
        self.images = {c: node.create_publisher(Image, f'/camera/{c}/image_raw', sensor)
                       for c in cameras}
        self.joints = node.create_publisher(JointState, '/joint_states', sensor)
        self.status = node.create_publisher(EpisodeStatus, '/episode/status', LATCHED)
        self.rewards, self.progress, self.markers, self.overlays, self.diagnostics = \
            [], [], [], [], []
        self.diagnostic_stamps = []
        self._subs = [
            node.create_subscription(StageReward, '/sarm2/stage_reward', self.rewards.append,
                                     QoSProfile(depth=500, reliability=RELIABLE.reliability)),
            node.create_subscription(Float32, '/sarm2/progress', self.progress.append,
                                     QoSProfile(depth=500, reliability=RELIABLE.reliability)),
            node.create_subscription(MarkerArray, '/sarm2/markers', self.markers.append,
                                     RELIABLE),
            node.create_subscription(Image, '/sarm2/overlay/image_raw', self.overlays.append,
                                     RELIABLE),
            node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                     RELIABLE),
        ]

    def close(self):
        for entity in self._subs:
            self.node.destroy_subscription(entity)
        for publisher in [*self.images.values(), self.joints, self.status]:
            self.node.destroy_publisher(publisher)

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.startswith(f'{self.target}:'):
                self.diagnostics.append(status)
                self.diagnostic_stamps.append(msg.header.stamp.sec * 10**9
                                              + msg.header.stamp.nanosec)

    def spin_until(self, condition, timeout: float) -> bool:
        import rclpy

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            rclpy.spin_once(self.node, timeout_sec=0.02)
        return condition()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def diag(self) -> dict:
        return {v.key: v.value for v in self.diagnostics[-1].values} if self.diagnostics else {}

    def wait_for_diag(self, condition, timeout: float = 10.0) -> dict:
        self.spin_until(lambda: bool(self.diagnostics) and condition(self.diag()), timeout)
        return self.diag()

    def wait_connected(self, timeout: float = 20.0) -> bool:
        return self.spin_until(lambda: all(p.get_subscription_count() > 0 for p in
                                           [*self.images.values(), self.joints])
                               and self._subs[0].get_publisher_count() > 0, timeout)

    def publish(self, images: dict, joints, stamp_ns: int, names=JOINT_NAMES, **image_fields):
        """One time step: every camera image (rgb8 unless overridden) and the joint state."""
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Header

        header = Header(frame_id='corner_camera')
        header.stamp.sec, header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        for camera, image in images.items():
            fields = {'height': image.shape[0], 'width': image.shape[1], 'encoding': 'rgb8',
                      'step': image.shape[1] * 3, 'data': image.tobytes()}
            fields.update(image_fields)
            self.images[camera].publish(Image(header=header, **fields))
        self.joints.publish(JointState(header=header, name=list(names),
                                       position=[float(x) for x in joints]))

    def publish_status(self, episode_id: str, task: str, instruction: str, state=1):
        from sarm2_msgs.msg import EpisodeStatus

        self.status.publish(EpisodeStatus(episode_id=episode_id, task=task,
                                          instruction=instruction, state=state))


def _now_ns(node) -> int:
    return node.get_clock().now().nanoseconds


# ---- a real model trained on simulator demonstrations, replayed from bags ---------------------
@pytest.fixture(scope='module')
def trained_on_demos(tmp_path_factory):
    """Tiny SARM2 model trained for 150 steps on 2 recorded sim demos; a 3rd demo held out."""
    import torch
    from sarm2_common.bag_dataset import read_episodes
    from sarm2_reward.checkpoint import save_checkpoint
    from sarm2_reward.model import Sarm2Config, Sarm2Model
    from sarm2_reward.text_embedding import make_text_embedder
    from sarm2_reward.training_data import EpisodeSampler, estimate_stage_priors, TargetConfig
    from sarm2_sim.demonstrations import record_demonstrations

    root = tmp_path_factory.mktemp('reward_node_demos')
    bags = record_demonstrations(root / 'bags', ['drawer-close-v3'], 3, failure_fraction=0.0,
                                 progress=False)
    episodes = read_episodes(bags)
    assert len(episodes) == 3 and all(e.success for e in episodes)
    train, held_out = episodes[:2], episodes[2]
    torch.manual_seed(0)
    config = Sarm2Config(cnn_channels=(8, 16, 32), frame_embed_dim=32, d_model=32, n_heads=2,
                         stage_layers=1, value_layers=1, num_experts=4, top_k=2,
                         expert_hidden=32, dropout=0.0)
    model = Sarm2Model(config)
    states = np.concatenate([e.joint_positions for e in train])
    model.set_state_normalization(states.mean(0), states.std(0))
    text = make_text_embedder(config.text_model_path)
    windows = {k: getattr(config, k) for k in ('stage_past_frames', 'stage_gap',
                                                'value_past_frames', 'value_gap')}
    sampler = EpisodeSampler(train, config.cameras, windows,
                             {e.instruction: text.embed([e.instruction])[0] for e in episodes},
                             estimate_stage_priors(train), TargetConfig(), seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: more threads only contend on a 2-core machine
    try:
        for _ in range(150):
            loss, _ = model(sampler.sample(16))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return save_checkpoint(model, root / 'checkpoint'), held_out


def _spearman(values) -> float:
    ranks = np.argsort(np.argsort(values))
    return float(np.corrcoef(ranks, np.arange(len(values)))[0, 1])


def _replay(ros, start_node, checkpoint, episode, episode_id: str, max_pairing_delay: float,
            period: float = 0.03, frozen: range = range(0), stamp_period: float | None = None):
    """Start a node on lossless input, play ``episode`` to it and wait for every reward.

    The frames in ``frozen`` are published while the node process is stopped (SIGSTOP), as if
    a busy machine held it off the CPU. Frames are stamped as recorded, or ``stamp_period``
    apart, ending now. Returns the node, the (closed) probe and the stamp of the first frame.
    """
    import signal

    node = start_node(f'checkpoint:={checkpoint}', 'autostart:=true', 'queue_size:=100',
                      'sensor_qos_reliability:=reliable', 'sensor_qos_depth:=100',
                      f'max_pairing_delay:={max_pairing_delay}',
                      f'joint_names:={json.dumps(JOINT_NAMES)}')
    probe = Probe(ros, reliable=True)
    try:
        assert probe.wait_connected(), node.output()
        probe.wait_for_diag(lambda d: d.get('state') == 'active')
        probe.publish_status(episode_id, episode.task, episode.instruction)
        probe.spin_for(0.5)
        if stamp_period is None:
            start, stamps = _now_ns(ros), episode.timestamps
        else:
            stamps = np.arange(len(episode)) * stamp_period
            start = _now_ns(ros) - int(stamps[-1] * 1e9)
        for t in range(len(episode)):
            if frozen and t == frozen.start:
                probe.spin_for(0.3)     # the node has caught up before it is frozen
                node.process.send_signal(signal.SIGSTOP)
            probe.publish({'corner': episode.images['corner'][t]}, episode.joint_positions[t],
                          start + int(stamps[t] * 1e9))
            probe.spin_for(period)
            if frozen and t == frozen.stop - 1:
                probe.spin_for(0.3)
                node.process.send_signal(signal.SIGCONT)
        assert probe.spin_until(lambda: len(probe.rewards) >= len(episode), 30), \
            f'{len(probe.rewards)}/{len(episode)} rewards; diagnostics {probe.diag()}'
        probe.spin_for(0.5)
    finally:
        if frozen:
            node.process.send_signal(signal.SIGCONT)
        probe.close()
    return node, probe, start


@pytest.mark.slow
def test_progress_rises_over_a_replayed_successful_demonstration(ros, start_node,
                                                                 trained_on_demos):
    from sarm2_reward.checkpoint import load_checkpoint
    from sarm2_reward.inference import predict_episode

    checkpoint, episode = trained_on_demos
    # Lossless: reliable input whose history holds the whole burst while the model catches up,
    # and a pairing deadline no stall of a loaded machine reaches: past it a frame takes the
    # nearest joint state by design (0.2 s by default, for bounded latency on a robot), and
    # this test is about what the node computes from the frames, not about that deadline.
    node, probe, start = _replay(ros, start_node, checkpoint, episode, 'demo-held-out',
                                 max_pairing_delay=5.0)

    rewards = probe.rewards
    assert [r.frame_index for r in rewards] == list(range(len(episode)))
    assert {r.episode_id for r in rewards} == {'demo-held-out'}
    assert {r.task for r in rewards} == {episode.task}
    progress = np.array([r.progress for r in rewards])
    # Rising over the episode: rank correlation with time, and the end well above the start.
    assert _spearman(progress) >= 0.8, np.round(progress, 2)
    assert progress[-10:].mean() - progress[:10].mean() >= 0.4, np.round(progress, 2)
    # The live node computes exactly what offline evaluation of the same frames computes.
    offline = predict_episode(load_checkpoint(checkpoint), episode)
    np.testing.assert_allclose(progress, offline['progress'], atol=1e-4)
    assert [r.primitive_id for r in rewards] == list(offline['primitive_probs'].argmax(1))
    # Stamps are the camera's; the plain numeric topic mirrors the message.
    assert rewards[0].header.stamp.sec * 10**9 + rewards[0].header.stamp.nanosec == start
    assert rewards[0].header.frame_id == 'corner_camera'
    np.testing.assert_allclose([p.data for p in probe.progress[-len(episode):]], progress,
                               atol=1e-6)
    assert np.sum([r.reward for r in rewards]) > 0.2  # dense rewards telescope to the rise
    assert probe.markers and probe.markers[-1].markers[0].text.startswith(
        rewards[-1].primitive_name)
    # Someone subscribed to the overlay, so it was drawn: 64 px camera scaled to 256 + panel.
    assert probe.overlays and probe.overlays[-1].width == 256
    assert probe.overlays[-1].height > 256 and probe.overlays[-1].encoding == 'rgb8'
    assert node.alive()


@pytest.mark.slow
def test_a_node_frozen_mid_episode_pairs_its_backlog_with_the_right_joint_states(
        ros, start_node, trained_on_demos):
    """A node held off the CPU (a busy machine) finds a backlog of frames on waking.

    Frames stamped more than max_pairing_delay apart sit in that backlog, and deciding the
    oldest of them before reading the joint states already waiting beside them would pair it
    with an older joint state than its own: the live progress would differ from offline.
    """
    from sarm2_reward.checkpoint import load_checkpoint
    from sarm2_reward.inference import predict_episode

    checkpoint, episode = trained_on_demos
    # Frames stamped 0.125 s apart (the model reads frames, not stamps): the 24 frozen ones
    # span 3 s of stamps, twice the pairing deadline, and the deadline is far above any delay
    # between a frame and its joint state on a loaded machine (the node is frozen 0.9 s).
    _, probe, _ = _replay(ros, start_node, checkpoint, episode, 'demo-frozen',
                          max_pairing_delay=1.5, period=0.01, frozen=range(20, 44),
                          stamp_period=0.125)

    assert [r.frame_index for r in probe.rewards] == list(range(len(episode)))
    progress = np.array([r.progress for r in probe.rewards])
    offline = predict_episode(load_checkpoint(checkpoint), episode)
    np.testing.assert_allclose(progress, offline['progress'], atol=1e-4)


@pytest.mark.slow
def test_bag_player_replay_reproduces_the_offline_evaluator(ros, start_node, trained_on_demos,
                                                            tmp_path):
    """Replay through bag_player reproduces the offline evaluator and relabeller.

    Same frames, same model: the recorded demo bag is played into the live node.
    """
    from sarm2_reward.checkpoint import load_checkpoint
    from sarm2_reward.evaluation import evaluate
    from spiral_policy.spiral.relabel import Sarm2Labeler

    checkpoint, episode = trained_on_demos
    # Lossless replay: reliable input with room for the whole burst (the demo is 80 Hz), and
    # pairing that waits out a loaded machine delivering one stream late (1 s of stamps is 80
    # frames, within the depth of 100).
    node = start_node(f'checkpoint:={checkpoint}', 'autostart:=true', 'queue_size:=100',
                      'sensor_qos_reliability:=reliable', 'sensor_qos_depth:=100',
                      'max_pairing_delay:=1.0',
                      f'task:={episode.task}',
                      f'instruction:={episode.instruction}', name='replay_reward_node')
    probe = Probe(ros, target='replay_reward_node', reliable=True)
    player = PeerProcess([console_script('sarm2_bringup', 'bag_player'),
                          episode.metadata['bag_path'], '--topics', '/camera/corner/image_raw',
                          '/joint_states', '--wait-for-subscribers', '1', '--rate', '0.5',
                          # the publisher sees the subscriber before the subscriber has matched
                          # the publisher: give discovery time to finish both ways
                          '--ros-args', '-p', 'start_delay:=3.0'],
                         'bag_player',
                         tmp_path)
    try:
        probe.wait_for_diag(lambda d: d.get('state') == 'active', 60)
        with player:
            # Only this node's rewards: other ROS 2 graphs on the host may share the domain.
            ours = lambda: [r for r in probe.rewards if r.task == episode.task]  # noqa: E731
            assert probe.spin_until(lambda: len(ours()) >= len(episode), 60), \
                (f'{len(ours())}/{len(episode)}; frames {[r.frame_index for r in ours()][:8]}; '
                 f'diagnostics {probe.diag()}; {player.output()}{node.output()}')
            probe.spin_for(0.5)
            assert player.stop() == 0, player.output()
    finally:
        probe.close()
    _, _, predictions = evaluate(load_checkpoint(checkpoint), [episode])
    live = np.array([r.progress for r in ours()])
    assert len(live) == len(episode)
    np.testing.assert_allclose(live, predictions[0]['progress'], atol=1e-4)
    # Offline relabelling (SPIRAL's) of the same bag gives the rewards the node published: one
    # smoothing. Rewards are differences of smoothed values, so twice the progress tolerance.
    offline = Sarm2Labeler.from_checkpoint(checkpoint).frame_rewards(episode)
    np.testing.assert_allclose([r.reward for r in ours()], offline, atol=2e-4)
    assert node.alive()


# ---- a rollout recorded by the real nodes, replayed at 1x ---------------------------------------
@pytest.fixture(scope='module')
def recorded_rollout(tmp_path_factory):
    """One rollout recorded the way ``make demo`` records them, and a reward checkpoint.

    sim_node (camera at the 20 Hz control rate, joint states at twice that), reward_node and
    policy_node run as processes (``sarm2_bringup.sim_graph``); the policy node records only the
    joint state it used at each control step, so camera and joint stamps differ by up to a
    joint period, as in every recorded rollout.
    """
    import os

    import torch
    from sarm2_reward.checkpoint import save_checkpoint
    from sarm2_reward.model import Sarm2Config, Sarm2Model
    from spiral_policy.compact_vla import CompactVla, CompactVlaConfig
    from spiral_policy.compact_vla import save_checkpoint as save_vla
    from sarm2_bringup.sim_graph import run_node_episodes, SimGraph

    root = tmp_path_factory.mktemp('rollout')
    torch.manual_seed(0)
    # The default reward model (the demo's size): replay keeps up with it, not just a tiny one.
    reward = save_checkpoint(Sarm2Model(Sarm2Config()).eval(), root / 'reward')
    vla = save_vla(CompactVla(CompactVlaConfig(
        image_size=16, chunk_size=4, d_model=16, num_heads=2, num_layers=1,
        conv_channels=(8, 8), text_buckets=16)).eval(), root / 'vla')
    graph = SimGraph(reward_checkpoint=reward, vla_checkpoint=vla, task='reach-v3',
                     image_size=64, max_steps=100, env=dict(os.environ))
    (root / 'bags').mkdir()
    (root / 'logs').mkdir()
    episodes = root / 'episodes.jsonl'
    run_node_episodes(graph, [('reach-v3', 3)], root / 'bags', root / 'logs', episodes,
                      'recording a rollout')
    [result] = [json.loads(line) for line in episodes.read_text().splitlines()]
    return Path(result['bag_path']), reward


@pytest.mark.slow
def test_a_rollout_bag_replayed_at_1x_gets_a_reward_for_nearly_every_frame(
        ros, start_node, recorded_rollout, tmp_path):
    """replay.launch.py's setup (reliable input, simulated time from the bag) at 1x."""
    from sarm2_common import bag_io, topics

    bag, checkpoint = recorded_rollout
    camera_topic = topics.image_topic('corner')
    frames = bag_io.topic_counts(bag)[camera_topic]
    assert frames >= 50, bag_io.topic_counts(bag)
    node = start_node(f'checkpoint:={checkpoint}', 'autostart:=true', 'use_sim_time:=true',
                      'sensor_qos_reliability:=reliable', 'diagnostics_period:=0.5',
                      name='rollout_reward_node')
    probe = Probe(ros, target='rollout_reward_node', reliable=True)
    player = PeerProcess([console_script('sarm2_bringup', 'bag_player'), str(bag), '--clock',
                          '--topics', camera_topic, topics.JOINT_STATES_TOPIC, '/episode/status',
                          '--wait-for-subscribers', '1', '--rate', '1.0',
                          '--ros-args', '-p', 'start_delay:=3.0'], 'bag_player', tmp_path)
    from rosgraph_msgs.msg import Clock

    bag_time = []
    clock_sub = ros.create_subscription(Clock, '/clock', bag_time.append, 10)
    clock_pub = ros.create_publisher(Clock, '/clock', 10)
    try:
        # On simulated time the node's timers (diagnostics) wait for the bag's /clock: ask the
        # lifecycle service whether it is active before playing.
        assert _wait_active(ros, probe, 'rollout_reward_node', 60), node.output()
        with player:
            assert probe.spin_until(lambda: not player.alive(), 60), player.output()
            assert player.stop() == 0, player.output()
        # Keep simulated time going after the bag so the node keeps reporting; it has scored
        # all it will score once no frame is pending.
        tick = bag_time[-1]
        for _ in range(40):
            tick.clock.sec += 1
            clock_pub.publish(tick)
            if probe.spin_until(lambda: probe.diag().get('pending_frames') == '0'
                                and int(probe.diag()['received_frames']) >= frames, 0.25):
                break
        diag = probe.diag()
    finally:
        ros.destroy_subscription(clock_sub)
        ros.destroy_publisher(clock_pub)
        probe.close()
    ours = [r for r in probe.rewards if r.model_id == diag['model_id']]
    counts = {k: int(diag[k]) for k in ('received_frames', 'processed_frames',
                                         'dropped_frames', 'unpaired_frames', 'bad_frames',
                                         'pending_frames')}
    assert len(ours) >= 0.95 * frames, (len(ours), frames, diag, node.output())
    # Every frame the node received has one place in its diagnostics.
    assert counts['received_frames'] == sum(v for k, v in counts.items()
                                            if k != 'received_frames'), diag
    assert node.alive()


def _wait_active(ros, probe, name: str, timeout: float) -> bool:
    from lifecycle_msgs.msg import State
    from lifecycle_msgs.srv import GetState

    client = ros.create_client(GetState, f'/{name}/get_state')
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client.wait_for_service(1.0):
                future = client.call_async(GetState.Request())
                if probe.spin_until(future.done, 5) and \
                        future.result().current_state.id == State.PRIMARY_STATE_ACTIVE:
                    return True
            probe.spin_for(0.2)
        return False
    finally:
        ros.destroy_client(client)


# ---- bad input, lifecycle, services -------------------------------------------------------------
@pytest.fixture(scope='module')
def two_camera_checkpoint(tmp_path_factory):
    """Save a tiny random 2-camera SARM2 checkpoint (for robustness, not accuracy)."""
    import torch
    from sarm2_reward.checkpoint import save_checkpoint
    from sarm2_reward.model import Sarm2Config, Sarm2Model

    torch.manual_seed(0)
    model = Sarm2Model(Sarm2Config(cameras=('corner', 'wrist'), **TINY))
    return save_checkpoint(model, tmp_path_factory.mktemp('tiny') / 'checkpoint')


def _frame(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return {'corner': image, 'wrist': image[::-1].copy()}, rng.normal(size=9) * 0.1


def _count(probe, key) -> int:
    return int(probe.diag().get(key, '0'))


def test_bad_input_never_crashes_and_shows_in_diagnostics(ros, start_node,
                                                          two_camera_checkpoint):
    node = start_node(f'checkpoint:={two_camera_checkpoint}', 'autostart:=true',
                      f'joint_names:={json.dumps(JOINT_NAMES)}', 'stale_timeout:=0.5',
                      'diagnostics_period:=0.2')
    probe = Probe(ros, cameras=('corner', 'wrist'))
    images, joints = _frame()
    clock = [_now_ns(ros)]

    def step(**kwargs):
        clock[0] += 50_000_000
        probe.publish(kwargs.pop('images', images), kwargs.pop('joints', joints), clock[0],
                      **kwargs)
        probe.spin_for(0.1)

    def good_frame_gets_a_reward():
        before = len(probe.rewards)
        step()
        return probe.spin_until(lambda: len(probe.rewards) > before, 5)

    try:
        assert probe.wait_connected(), node.output()
        probe.wait_for_diag(lambda d: d.get('state') == 'active')
        assert good_frame_gets_a_reward()
        cases = [
            ('bad_input.image_encoding', {'encoding': 'yuv422'}),
            ('bad_input.image_encoding', {'encoding': '16UC1', 'step': 64,
                                          'data': bytes(32 * 64)}),
            ('bad_input.image_size', {'step': 95}),
            ('bad_input.image_size', {'data': bytes(100)}),
            ('bad_input.image_empty', {'data': b''}),
            ('bad_input.image_empty', {'height': 0, 'step': 96, 'data': b''}),
            ('bad_input.joint_nan', {'joints': np.full(9, np.nan)}),
            ('bad_input.joint_names', {'names': [f'other_{i}' for i in range(9)]}),
            ('bad_input.joint_names', {'joints': np.zeros(5), 'names': JOINT_NAMES[:5]}),
        ]
        for key, corruption in cases:
            before = _count(probe, key)
            step(**corruption)
            probe.wait_for_diag(lambda d, k=key, b=before: int(d.get(k, '0')) > b)
            assert _count(probe, key) > before, (key, probe.diag())
            assert node.alive(), node.output()
            assert good_frame_gets_a_reward(), (key, probe.diag())
        assert probe.diag()['bad_inputs'] != '0'
        assert probe.diagnostics[-1].level == b'\x01'  # WARN while bad inputs are on record

        # Stamps going backwards: dropped and counted, the next good frame still gets a reward.
        probe.publish(images, joints, clock[0] - 10**9)
        probe.wait_for_diag(lambda d: int(d.get('backwards_stamps', '0')) > 0)
        assert int(probe.diag()['backwards_stamps']) > 0
        assert good_frame_gets_a_reward()

        # A reset mid-episode: new id, frame index restarts at 0.
        from sarm2_msgs.srv import ResetEpisode

        client = ros.create_client(ResetEpisode, '/reward_node/reset')
        assert client.wait_for_service(10)
        future = client.call_async(ResetEpisode.Request(episode_id='after-reset'))
        assert probe.spin_until(future.done, 10) and future.result().success
        assert good_frame_gets_a_reward()
        assert probe.rewards[-1].episode_id == 'after-reset'
        assert probe.rewards[-1].frame_index == 0
        ros.destroy_client(client)

        # A camera that stops: frames cannot be paired, the camera is reported stale.
        before = len(probe.rewards)
        for _ in range(10):
            clock[0] += 50_000_000
            probe.publish({'corner': images['corner']}, joints, clock[0])
            probe.spin_for(0.1)
        diag = probe.wait_for_diag(lambda d: 'wrist' in d.get('stale_streams', ''))
        assert 'wrist' in diag['stale_streams'] and 'corner' not in diag['stale_streams']
        assert int(diag['unpaired_frames']) > 0 and len(probe.rewards) == before
        assert 'no data from wrist' in probe.diagnostics[-1].message
        assert node.alive(), node.output()
    finally:
        probe.close()


def test_checkpoint_that_fails_to_load_leaves_node_unconfigured_and_says_why(
        ros, start_node, two_camera_checkpoint, tmp_path):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'config.json').write_text('{"format": "sarm2_reward.checkpoint", "forma')
    node = start_node(f'checkpoint:={broken}', 'autostart:=true', 'diagnostics_period:=0.2',
                      name='reward_node_broken')
    probe = Probe(ros, cameras=('corner', 'wrist'), target='reward_node_broken')
    get_state = ros.create_client(GetState, '/reward_node_broken/get_state')
    change_state = ros.create_client(ChangeState, '/reward_node_broken/change_state')
    set_params = ros.create_client(SetParameters, '/reward_node_broken/set_parameters')

    def call(client, request):
        assert client.wait_for_service(15), node.output()
        future = client.call_async(request)
        assert probe.spin_until(future.done, 15)
        return future.result()

    try:
        diag = probe.wait_for_diag(lambda d: 'failed to load' in d.get('last_error', ''), 20)
        assert 'failed to load' in diag['last_error'] and 'config.json' in diag['last_error']
        assert probe.diagnostics[-1].level == b'\x02'
        assert call(get_state, GetState.Request()).current_state.id == \
            State.PRIMARY_STATE_UNCONFIGURED
        assert node.alive()

        # Invalid values are rejected by the parameter callback, with a reason.
        bad = Parameter(name='smoothing', value=ParameterValue(
            type=ParameterType.PARAMETER_DOUBLE, double_value=1.5))
        result = call(set_params, SetParameters.Request(parameters=[bad])).results[0]
        assert not result.successful and result.reason
        bad_device = Parameter(name='device', value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value='gpu'))
        result = call(set_params, SetParameters.Request(parameters=[bad_device])).results[0]
        assert not result.successful and 'device' in result.reason

        # Point it at a good checkpoint and drive the lifecycle by hand: no rewards until active.
        good = Parameter(name='checkpoint', value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=str(two_camera_checkpoint)))
        assert call(set_params, SetParameters.Request(parameters=[good])).results[0].successful
        configure = ChangeState.Request()
        configure.transition.id = Transition.TRANSITION_CONFIGURE
        assert call(change_state, configure).success
        assert probe.wait_connected()
        images, joints = _frame()
        probe.publish(images, joints, _now_ns(ros))
        probe.spin_for(1.0)
        assert probe.rewards == []  # inactive: nothing processed
        activate = ChangeState.Request()
        activate.transition.id = Transition.TRANSITION_ACTIVATE
        assert call(change_state, activate).success
        probe.wait_for_diag(lambda d: d.get('state') == 'active')
        probe.publish(images, joints, _now_ns(ros))
        assert probe.spin_until(lambda: len(probe.rewards) == 1, 10), probe.diag()
        assert probe.rewards[0].model_id == probe.diag()['model_id']

        # Deactivate: frames are ignored again; cleanup frees the model.
        deactivate = ChangeState.Request()
        deactivate.transition.id = Transition.TRANSITION_DEACTIVATE
        assert call(change_state, deactivate).success
        probe.publish(images, joints, _now_ns(ros))
        probe.spin_for(1.0)
        assert len(probe.rewards) == 1
        cleanup = ChangeState.Request()
        cleanup.transition.id = Transition.TRANSITION_CLEANUP
        assert call(change_state, cleanup).success
        assert call(get_state, GetState.Request()).current_state.id == \
            State.PRIMARY_STATE_UNCONFIGURED
        assert node.stop() == 0, node.output()  # Ctrl-C ends it cleanly
    finally:
        for client in (get_state, change_state, set_params):
            ros.destroy_client(client)
        probe.close()


def test_set_task_and_sim_time(ros, start_node, two_camera_checkpoint):
    """SetTask reaches every reward; with use_sim_time the node's clock follows /clock."""
    from rosgraph_msgs.msg import Clock
    from sarm2_msgs.srv import SetTask

    node = start_node(f'checkpoint:={two_camera_checkpoint}', 'autostart:=true',
                      'use_sim_time:=true', 'diagnostics_period:=0.2', 'queue_size:=10',
                      name='reward_node_sim')
    probe = Probe(ros, cameras=('corner', 'wrist'), target='reward_node_sim')
    clock_pub = ros.create_publisher(Clock, '/clock', 10)
    client = ros.create_client(SetTask, '/reward_node_sim/set_task')
    sim_start = 1_000 * 10**9
    try:
        assert probe.wait_connected(), node.output()
        assert client.wait_for_service(10)
        future = client.call_async(SetTask.Request(task='drawer-close-v3',
                                                   instruction='close it gently'))
        assert probe.spin_until(future.done, 10) and future.result().success
        future = client.call_async(SetTask.Request(task=''))
        assert probe.spin_until(future.done, 10) and not future.result().success
        images, joints = _frame()
        for i in range(5):
            stamp = sim_start + i * 100_000_000
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = divmod(stamp, 10**9)
            clock_pub.publish(clock)
            probe.publish(images, joints, stamp)
            probe.spin_for(0.2)
        assert probe.spin_until(lambda: len(probe.rewards) == 5, 10), probe.diag()
        assert {(r.task, r.instruction) for r in probe.rewards} == {
            ('drawer-close-v3', 'close it gently')}
        # Diagnostics are stamped with the simulated clock and latency is measured on it: the
        # wall clock is ~1.7e9 s, the simulated one ~1000 s.
        # The diagnostics timer runs on the simulated clock (once per simulated second): keep
        # the clock moving until a report published after the frames arrives.
        for i in range(5, 40):
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = divmod(sim_start + i * 100_000_000, 10**9)
            clock_pub.publish(clock)
            if probe.spin_until(lambda: probe.diag().get('latency_p50_ms', 'n/a') != 'n/a',
                                0.1):
                break
        diag = probe.diag()
        assert sim_start <= probe.diagnostic_stamps[-1] < sim_start + 5 * 10**9
        assert float(diag['latency_p50_ms']) < 1000
    finally:
        ros.destroy_client(client)
        ros.destroy_publisher(clock_pub)
        probe.close()


def test_lrm_backend_keeps_the_output_rate_while_the_vlm_is_slow_or_failing(ros, start_node):
    """The node answers every frame at once whatever the VLM does, and reports VLM faults.

    Pace is judged from the node's own per-frame step time (StageReward.inference_time) and its
    count of processed frames, not from arrival times: DDS on a loaded host can deliver frames
    in bursts, which says nothing about whether the node waited for the VLM.
    """
    from fake_vlm_server import FakeVlmServer

    server = FakeVlmServer()
    server.behaviour, server.delay = 'slow', 0.5       # a query round takes ~1.5 s
    try:
        # One served model name per question, as vLLM serves the three LoRA adapters.
        node = start_node('backend:=lrm', f'lrm_endpoint:={server.url}',
                          'lrm_models:=[lrm-contrastive,lrm-progress,lrm-completion]',
                          'cameras:=[corner]', 'lrm_query_every:=4', 'lrm_timeout:=5.0',
                          'task:=reach-v3', 'instruction:=reach the goal', 'autostart:=true',
                          # lossless input and a queue deep enough for a DDS burst: every
                          # frame must get its own reward
                          'sensor_qos_reliability:=reliable', 'sensor_qos_depth:=100',
                          'queue_size:=100')
        probe = Probe(ros, reliable=True)
        assert probe.wait_connected(30), node.output()
        # Frames that arrive before activation are dropped (and counted): wait for it.
        probe.wait_for_diag(lambda d: d.get('state') == 'active', 30)
        image = np.zeros((32, 32, 3), np.uint8)
        period_ns = 50_000_000                           # a 20 Hz camera
        start_ns = _now_ns(ros)

        def play(seconds: float, first_frame: int) -> int:
            frames = int(seconds * 20)
            for k in range(frames):
                image[:] = (first_frame + k) % 255
                probe.publish({'corner': image}, np.zeros(9), start_ns + (first_frame + k)
                              * period_ns)
                probe.spin_for(0.05)
            return first_frame + frames

        frame = play(4.0, 0)
        # The node's own count: every frame processed, none dropped (a lossy output link on a
        # loaded host may still lose a few rewards on their way to this probe).
        diag = probe.wait_for_diag(lambda d: int(d.get('processed_frames', 0)) >= frame, 15)
        assert int(diag.get('processed_frames', 0)) == frame, (diag, node.output())
        assert int(diag['dropped_frames']) == 0, diag
        assert float(diag['vlm_last_latency_s']) >= 1.0, diag
        assert int(diag['vlm_replaced_requests']) > 0, diag
        slow_count = len(probe.rewards)
        # Each frame cost the node milliseconds although each VLM round took ~1.5 s.
        assert slow_count >= frame // 2, slow_count
        step_times = [m.inference_time for m in probe.rewards]
        assert max(step_times) < 0.1, max(step_times)
        assert probe.rewards[-1].model_id == \
            'lrm:openai:lrm-contrastive+lrm-progress+lrm-completion:tri'
        assert probe.rewards[-1].progress == pytest.approx(0.4)
        assert {(q, body['model']) for q, (_, body) in zip(server.questions_asked(),
                                                           server.requests)} == {
            ('contrastive', 'lrm-contrastive'), ('progress', 'lrm-progress'),
            ('completion', 'lrm-completion')}

        server.behaviour = 'error'
        frame = play(3.0, frame)
        diag = probe.wait_for_diag(lambda d: int(d.get('processed_frames', 0)) >= frame, 15)
        assert int(diag.get('processed_frames', 0)) == frame, (diag, node.output())
        assert max(m.inference_time for m in probe.rewards[slow_count:]) < 0.1
        diag = probe.wait_for_diag(lambda d: int(d.get('vlm_http', 0)) > 0, 10)
        status = probe.diagnostics[-1]
        assert status.level == b'\x01' and 'VLM query failed (http)' in status.message, status
        assert node.alive()
        probe.close()
    finally:
        server.close()


# ---- faults: oversized inputs, a bogus stamp, bad parameters, a second node of the same name ---
def _call(probe, client, request, timeout=30.0):
    assert client.wait_for_service(timeout)
    future = client.call_async(request)
    assert probe.spin_until(future.done, timeout)
    return future.result()


def test_oversized_task_instruction_and_ids_are_refused(ros, start_node, two_camera_checkpoint):
    from sarm2_msgs.srv import ResetEpisode, SetTask

    node = start_node(f'checkpoint:={two_camera_checkpoint}', 'autostart:=true',
                      'diagnostics_period:=0.2', 'queue_size:=50')
    probe = Probe(ros, cameras=('corner', 'wrist'))
    set_task = ros.create_client(SetTask, '/reward_node/set_task')
    reset = ros.create_client(ResetEpisode, '/reward_node/reset')
    try:
        assert probe.wait_connected(), node.output()
        started = time.monotonic()
        answer = _call(probe, set_task, SetTask.Request(task='push-v3',
                                                        instruction='x' * 10_000_000))
        assert not answer.success and 'instruction' in answer.message
        assert time.monotonic() - started < 8, 'a 10 MB request should be refused quickly'
        answer = _call(probe, reset, ResetEpisode.Request(episode_id='e' * 10_000_000))
        assert not answer.success and 'episode_id' in answer.message
        probe.publish_status('s' * 1_000_000, 'push-v3', 'push the puck')
        assert probe.wait_for_diag(lambda d: _count(probe, 'bad_input.status_too_long') >= 1)
        # Nothing long made it into the rewards.
        images, joints = _frame()
        probe.publish(images, joints, _now_ns(ros))
        assert probe.spin_until(lambda: probe.rewards, 15), probe.diag()
        assert len(probe.rewards[-1].instruction) < 3000
        assert len(probe.rewards[-1].episode_id) <= 64
        assert node.alive()
    finally:
        ros.destroy_client(set_task)
        ros.destroy_client(reset)
        probe.close()


def test_one_bogus_future_stamp_does_not_hijack_the_episode(ros, start_node,
                                                            two_camera_checkpoint):
    node = start_node(f'checkpoint:={two_camera_checkpoint}', 'autostart:=true',
                      'diagnostics_period:=0.2', 'queue_size:=50',
                      'sensor_qos_reliability:=reliable', 'sensor_qos_depth:=50')
    probe = Probe(ros, cameras=('corner', 'wrist'), reliable=True)
    try:
        assert probe.wait_connected(), node.output()
        probe.wait_for_diag(lambda d: d.get('state') == 'active')
        probe.publish_status('policy-episode', 'push-v3', 'push the puck')
        assert probe.wait_for_diag(lambda d: d.get('episode_id') == 'policy-episode')
        images, joints = _frame()
        year_2038 = 2_145_916_800 * 1_000_000_000
        for k in range(30):
            stamp = year_2038 if k == 10 else _now_ns(ros)
            probe.publish(images, joints, stamp)
            probe.spin_for(0.05)
        assert probe.spin_until(lambda: len(probe.rewards) >= 25, 20), probe.diag()
        probe.spin_for(0.5)
    finally:
        probe.close()
    assert {r.episode_id for r in probe.rewards} == {'policy-episode'}
    assert _count(probe, 'bad_input.stamp_ahead') >= 1 and _count(probe, 'timeline_resets') == 0
    assert node.alive()


@pytest.mark.parametrize('parameter', ['stale_timeout:=.nan', 'output_rate:=.inf',
                                       'pairing_slop:=.nan', 'max_pairing_delay:=-1.0',
                                       'backend:=magic', 'smoothng:=0.3'])
def test_bad_parameters_stop_the_node_with_one_line(tmp_path, parameter):
    import subprocess

    result = subprocess.run([str(NODE), '--ros-args', '--params-file',
                             str(CONFIG_DIR / 'reward_node.yaml'), '-p', parameter],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith('reward_node: error:'), lines
    assert parameter.split(':=')[0] in lines[0], lines


def test_two_reward_nodes_with_one_name_are_reported(ros, start_node, two_camera_checkpoint):
    first = start_node(f'checkpoint:={two_camera_checkpoint}', 'diagnostics_period:=0.2')
    second = start_node(f'checkpoint:={two_camera_checkpoint}', 'diagnostics_period:=0.2')
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and 'nodes are named' not in (first.output()
                                                                      + second.output()):
        time.sleep(0.2)
    assert 'nodes are named /reward_node' in first.output() + second.output()

