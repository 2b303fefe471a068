"""Frozen pretrained encoders and local text models, loaded from directories made on the spot.

No weights are downloaded: the tests save tiny randomly initialized CLIP/SigLIP vision towers and
a tiny BERT with a word-level tokenizer, then load them through the production code paths.
"""

import numpy as np
import pytest
from sarm2_reward.checkpoint import load_checkpoint, save_checkpoint
from sarm2_reward.encoders import PretrainedVisionEncoder
from sarm2_reward.inference import predict_episode, Sarm2Predictor
from sarm2_reward.model import Sarm2Config, Sarm2Model
from sarm2_reward.text_embedding import (HashedTextEmbedder, make_text_embedder,
                                         TransformersTextEmbedder)
from synthetic_episodes import make_episode, one_torch_thread  # noqa: F401 - fixture
import torch

transformers = pytest.importorskip('transformers')


def save_vision_tower(path, family: str):
    if family == 'clip':
        config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_attention_heads=2,
                                               image_size=32, patch_size=8)
        model = transformers.CLIPVisionModel(config)
    else:
        config = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64,
                                                 num_hidden_layers=1, num_attention_heads=2,
                                                 image_size=32, patch_size=8)
        model = transformers.SiglipVisionModel(config)
    model.save_pretrained(path)
    return path


def save_text_model(path):
    from tokenizers import models, pre_tokenizers, Tokenizer
    words = ['[PAD]', '[UNK]', 'place', 'the', 'square', 'on', 'goal', 'pick', 'grab']
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token='[UNK]'))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token='[PAD]',
                                                unk_token='[UNK]')
    fast.save_pretrained(path)
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)
    transformers.BertModel(config).save_pretrained(path)
    return path


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.mark.parametrize('family', ['clip', 'siglip'])
def test_frozen_vision_tower_trains_nothing_and_is_not_saved(tmp_path, family):
    directory = save_vision_tower(tmp_path / family, family)
    torch.manual_seed(0)
    config = Sarm2Config(encoder='pretrained', encoder_path=str(directory), image_size=32,
                         d_model=32, n_heads=2, stage_layers=1, value_layers=1, expert_hidden=8)
    model = Sarm2Model(config).eval()
    assert isinstance(model.encoder, PretrainedVisionEncoder) and model.encoder.out_dim == 32
    assert not any(p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert not model.encoder.model.training  # stays in eval mode (no dropout)
    model.eval()
    episode = make_episode(0, length=12)
    before = predict_episode(model, episode)
    save_checkpoint(model, tmp_path / 'ckpt')
    from safetensors.torch import load_file
    assert not any(k.startswith('encoder.') for k in load_file(
        str(tmp_path / 'ckpt' / 'model.safetensors')))
    after = predict_episode(load_checkpoint(tmp_path / 'ckpt'), episode)
    np.testing.assert_array_equal(before['value'], after['value'])
    predictor = Sarm2Predictor.from_model(model)
    predictor.reset(episode.instruction)
    for t in range(len(episode)):
        value = predictor.step({'corner': episode.images['corner'][t]},
                               episode.joint_positions[t]).value
    assert value == pytest.approx(float(before['value'][-1]), abs=1e-5)


def test_pretrained_encoder_errors_name_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        PretrainedVisionEncoder(tmp_path)
    with pytest.raises(ValueError, match='encoder_path'):
        Sarm2Config(encoder='pretrained')


def test_local_sentence_model_and_hashed_fallback(tmp_path):
    embedder = make_text_embedder(str(save_text_model(tmp_path / 'text')))
    assert isinstance(embedder, TransformersTextEmbedder) and embedder.dim == 16
    vectors = embedder.embed(['place the square', 'pick grab', 'place the square'])
    assert vectors.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    model = Sarm2Model(Sarm2Config(text_model_path=str(tmp_path / 'text'), text_dim=16,
                                   image_size=32, d_model=32, n_heads=2))
    assert model.primitive_embeddings.shape[1] == 16

    fallback = make_text_embedder('')
    assert isinstance(fallback, HashedTextEmbedder)
    a, b, c = fallback.embed(['open the drawer', 'close the drawer', 'pick up the puck'])
    assert float(a @ b) > float(a @ c)  # lexical overlap shows
    np.testing.assert_array_equal(fallback.embed(['open the drawer'])[0], a)
    with pytest.raises(FileNotFoundError, match='config.json'):
        make_text_embedder(str(tmp_path / 'missing'))
