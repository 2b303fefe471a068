"""LRM with a local transformers VLM built from configs (no download).

A tiny randomly initialised LLaVA-style model and an in-memory tokenizer are saved with
save_pretrained and loaded back by the client, exercising image preprocessing, prompting,
generation, parsing, the three rewards and the tri mode. (Answers that do parse are covered by
the HTTP tests in test_lrm.py; a random model only produces the neutral fallbacks.)
"""

import numpy as np
import pytest

transformers = pytest.importorskip('transformers')
torch = pytest.importorskip('torch')

from sarm2_reward.lrm.lrm_backend import ask_round, LrmBackend, LrmConfig  # noqa: E402
from sarm2_reward.lrm.questions import PROGRESS, PROMPTS  # noqa: E402
from sarm2_reward.lrm.vlm_clients import TransformersVlmClient  # noqa: E402
from ros_harness import wait_until  # noqa: E402

CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789{}":.,;_-?!\n\'()/ '
CHAT_TEMPLATE = (
    "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
    '{% if add_generation_prompt %}\nA:{% endif %}')


def build_processor():
    from tokenizers import decoders, models, pre_tokenizers, Tokenizer
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    vocab = {'<unk>': 0, '<s>': 1, '</s>': 2, '<pad>': 3, '<image>': 4}
    for char in CHARS:
        vocab.setdefault(char, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token='<unk>'))
    tokenizer.pre_tokenizer = pre_tokenizers.Split('', 'isolated')
    tokenizer.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token='<unk>', bos_token='<s>', eos_token='</s>',
        pad_token='<pad>', extra_special_tokens={'image_token': '<image>'})
    images = CLIPImageProcessor(size={'shortest_edge': 32}, crop_size={'height': 32, 'width': 32})
    return LlavaProcessor(image_processor=images, tokenizer=fast, patch_size=8,
                          vision_feature_select_strategy='default', chat_template=CHAT_TEMPLATE,
                          num_additional_image_tokens=1), len(vocab)


def build_model(vocab_size: int):
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration)

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=32, patch_size=8),
        text_config=LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, max_position_embeddings=1024,
                                eos_token_id=2, bos_token_id=1, pad_token_id=3),
        image_token_index=4, vision_feature_select_strategy='default', vision_feature_layer=-1)
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    processor, vocab_size = build_processor()
    directory = tmp_path_factory.mktemp('random_vlm')
    build_model(vocab_size).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(2)]


def test_random_vlm_runs_the_full_path_and_garbage_gets_neutral_values(model_dir):
    client = TransformersVlmClient(str(model_dir), max_new_tokens=6)
    earlier, current = frames()
    raw = client.ask([current], PROMPTS[PROGRESS]('push the puck to the goal'))
    assert isinstance(raw, str)
    answers = ask_round(client, 'push the puck to the goal', [current], earlier, 0.25)
    # A random model does not speak JSON: every answer falls back to its neutral value.
    assert set(answers.unparseable) == {'contrastive', 'progress', 'completion'}
    assert (answers.contrastive, answers.progress, answers.complete) == (0, 0.25, False)
    assert answers.tri == pytest.approx((0.5 + 0.25 + 0.0) / 3)
    backend = LrmBackend(client, LrmConfig(query_every=1, mode='tri'))
    backend.reset('push-v3', 'push the puck to the goal')
    backend.step({'corner': current}, np.zeros(9), 0.0)
    assert wait_until(lambda: backend.stats['answers'] == 1, 60.0)
    estimate = backend.step({'corner': earlier}, np.zeros(9), 0.1)
    assert estimate.reward == pytest.approx((0.5 + 0.0 + 0.0) / 3)
    assert backend.diagnostics()['vlm_unparseable_progress'] == '1'
    backend.close()


def test_missing_model_directory_is_named(tmp_path):
    with pytest.raises(ValueError, match='no config.json'):
        TransformersVlmClient(str(tmp_path / 'nowhere'))


def test_lora_adapter_is_loaded_on_the_local_model(model_dir, tmp_path):
    peft = pytest.importorskip('peft')
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
    # Random (not zero) LoRA weights, so the adapter visibly changes the model.
    adapted = peft.get_peft_model(base, peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=['q_proj', 'v_proj'], init_lora_weights=False))
    adapter_dir = tmp_path / 'adapter'
    adapted.save_pretrained(adapter_dir)
    saved = {n: p.detach().clone() for n, p in adapted.named_parameters() if 'lora_' in n}
    assert saved

    client = TransformersVlmClient(str(model_dir), adapter_dir=str(adapter_dir),
                                   max_new_tokens=4)
    loaded = {n: p for n, p in client.model.named_parameters() if 'lora_' in n}
    assert set(loaded) == set(saved)
    assert all(torch.equal(loaded[n], saved[n]) for n in saved)
    assert isinstance(client.ask([frames()[0]], 'Is the task complete?'), str)
