"""`spiral_loop --reward lrm`: the LRM options reach every round's spiral_update unchanged."""

import json

import pytest

from spiral_policy.spiral.offline_update import build_parser as update_parser
from sarm2_bringup.spiral_loop import build_parser, config_from_args, LoopConfig


@pytest.fixture
def checkpoints(tmp_path):
    """Directories that look like checkpoints (LoopConfig only checks the files exist)."""
    paths = []
    for name in ('reward', 'vla'):
        (tmp_path / name).mkdir()
        for file in ('config.json', 'model.safetensors'):
            (tmp_path / name / file).write_text('{}')
        paths.append(str(tmp_path / name))
    return paths


def test_lrm_options_travel_from_the_loop_to_spiral_update(checkpoints):
    reward, vla = checkpoints
    args = build_parser().parse_args([
        '--reward-checkpoint', reward, '--base-checkpoint', vla, '--reward', 'lrm',
        '--lrm-endpoint', 'http://gpu-box:8000/v1',
        '--lrm-models', 'lrm-contrastive', 'lrm-progress', 'lrm-completion',
        '--lrm-query-every', '5'])
    config = config_from_args(args)
    assert config.lrm_options == (
        '--lrm-endpoint', 'http://gpu-box:8000/v1', '--lrm-models', 'lrm-contrastive',
        'lrm-progress', 'lrm-completion', '--lrm-query-every', '5')
    # Saved as the run's config.json and read back on resume.
    assert LoopConfig(**json.loads(json.dumps(config.to_dict()))) == config
    update = update_parser().parse_args(['bags', '--out', 'round', '--reward', 'lrm',
                                         *config.lrm_options])
    assert update.lrm_models == ['lrm-contrastive', 'lrm-progress', 'lrm-completion']
    assert (update.lrm_endpoint, update.lrm_query_every) == ('http://gpu-box:8000/v1', 5)


@pytest.mark.parametrize('reward, options, message', [
    ('lrm', (), 'needs them'),
    ('sarm2', ('--lrm-endpoint', 'http://gpu-box:8000/v1', '--lrm-model', 'm'), 'go with'),
    ('lrm', ('--lrm-endpoint', 'http://gpu-box:8000/v1'), 'lrm_model or lrm_models'),
    ('lrm', ('--lrm-model-dir', '/m', '--lrm-mode', 'median'), 'invalid choice'),
    ('lrm', ('--lrm-model-dir', '/m', '--rounds', '2'), 'not LRM options'),
])
def test_bad_lrm_options_are_rejected_before_a_run_starts(checkpoints, reward, options, message):
    reward_checkpoint, vla = checkpoints
    with pytest.raises(ValueError, match=message):
        LoopConfig(reward_checkpoint=reward_checkpoint, base_checkpoint=vla, reward=reward,
                   lrm_options=options)
