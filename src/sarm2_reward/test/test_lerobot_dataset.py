"""LeRobot datasets on disk (v2.1 and v3.0 layouts) read back as labelled episodes.

v3.0 datasets are written by the real exporter from bags, v2.1 ones by the test writer.
"""

import json

from episode_bags import write_episode_bags
from lerobot_writer import write_lerobot
import numpy as np
import pytest
from sarm2_reward.datasets import load_episodes
from sarm2_reward.lerobot_export import export_lerobot
from sarm2_reward.lerobot_dataset import (load_primitive_map, read_lerobot_dataset,
                                          subtask_to_primitive)
from sarm2_common.vocabulary import primitive_id
from synthetic_episodes import make_episodes


def _write(root, episodes, version: str):
    if version == 'v2.1':
        return write_lerobot(root, episodes)
    export_lerobot(write_episode_bags(root.parent / 'bags', episodes), root, progress=False)
    return root


@pytest.mark.parametrize('version', ['v2.1', 'v3.0'])
def test_reads_frames_states_labels_and_outcome(tmp_path, version):
    originals = make_episodes(2, seed=3, failures=1)
    root = _write(tmp_path / 'ds', originals, version)
    episodes = load_episodes(root)  # auto-detected as LeRobot
    assert len(episodes) == 3
    for original, episode in zip(originals, episodes):
        assert len(episode) == len(original)
        assert episode.instruction == original.instruction
        assert episode.task == (original.task if version == 'v3.0' else original.instruction)
        assert episode.success == original.success
        np.testing.assert_allclose(episode.joint_positions, original.joint_positions, atol=1e-6)
        np.testing.assert_array_equal(episode.primitive_ids, original.primitive_ids)
        # lossy video: the frames match closely, and each frame matches its own time step.
        error = np.abs(episode.images['corner'].astype(int) - original.images['corner']).mean()
        assert error < 6
        shifted = np.abs(episode.images['corner'][1:].astype(int)
                         - original.images['corner'][:-1]).mean()
        assert shifted > error


def test_subtask_names_map_onto_the_vocabulary(tmp_path):
    assert subtask_to_primitive('pick_grab') == primitive_id('pick_grab')
    assert subtask_to_primitive('Grasp the red cube') == primitive_id('pick_grab')
    assert subtask_to_primitive('levitate') == -1
    mapping_file = tmp_path / 'map.json'
    mapping_file.write_text(json.dumps({'levitate': 'pick_grab'}))
    assert subtask_to_primitive('levitate', load_primitive_map(mapping_file)) == \
        primitive_id('pick_grab')
    mapping_file.write_text(json.dumps({'levitate': 'fly'}))
    with pytest.raises(ValueError, match='levitate.*unknown primitive'):
        load_primitive_map(mapping_file)


def test_unmapped_subtasks_are_unlabelled_and_reported(tmp_path, caplog):
    originals = make_episodes(1, seed=5)
    names = {'reach': 'hover', 'pick_grab': 'grasp it', 'place': 'put it on the goal'}
    root = write_lerobot(tmp_path / 'ds', originals, names=names)
    (episode,) = read_lerobot_dataset(root, image_size=16)
    assert episode.images['corner'].shape[1:] == (16, 16, 3)
    reach = originals[0].primitive_ids == primitive_id('reach')
    assert np.all(episode.primitive_ids[reach] == -1)
    assert np.all(episode.primitive_ids[~reach] == originals[0].primitive_ids[~reach])
    assert 'hover' in caplog.text


def test_missing_video_skips_the_episode_with_a_warning(tmp_path, caplog):
    root = write_lerobot(tmp_path / 'ds', make_episodes(2, seed=7))
    next(root.rglob('episode_000001.mp4')).unlink()
    episodes = read_lerobot_dataset(root)
    assert len(episodes) == 1 and 'episode 1' in caplog.text


def test_not_a_dataset_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_episodes(tmp_path / 'missing')
    (tmp_path / 'meta').mkdir()
    (tmp_path / 'meta' / 'info.json').write_text('{"features": {}}')
    with pytest.raises(ValueError, match='no image or video features'):
        load_episodes(tmp_path, 'lerobot')
