"""LRM with a local transformers VLM built from configs (no download).

A tiny randomly initialised LLaVA-style model and an in-memory tokenizer are saved with
save_pretrained and loaded back by the client, exercising image preprocessing, the published
prompts, generation, parsing, the three rewards and the tri mode, and one LoRA adapter per
question switched per query. (Answers that do parse are covered by the HTTP tests in
test_lrm.py; a random model only produces the neutral fallbacks.)
"""

import json

import numpy as np
import pytest

transformers = pytest.importorskip('transformers')
torch = pytest.importorskip('torch')

from sarm2_reward.lrm.lrm_backend import ask_round, LrmBackend, LrmConfig  # noqa: E402
from sarm2_reward.lrm.questions import (completion_query, contrastive_query,  # noqa: E402
                                        progress_query, QUESTIONS)
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
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]


def test_random_vlm_runs_the_full_path_and_garbage_gets_neutral_values(model_dir):
    client = TransformersVlmClient(str(model_dir), max_new_tokens=6)
    initial, earlier, current = frames()
    raw = client.ask(progress_query('push the puck to the goal', initial, current))
    assert isinstance(raw, str)
    answers = ask_round(client, 'push the puck to the goal', current, earlier, initial, 0.25)
    # A random model does not answer in the adapters' format: every answer falls back to its
    # neutral value.
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


def save_adapter(model_dir, directory, seed: int, vision_tower: bool = False) -> dict:
    """Save a LoRA adapter with random (not zero) weights; return its trained tensors.

    LoRA goes on the language model's attention, as in the published adapters. ``vision_tower``
    also fine-tunes the whole vision tower (peft ``modules_to_save``), as the published progress
    adapter does with Qwen3-VL's, and then lists a module nested inside it as well, as that
    adapter's config does (its merger inside the vision tower).
    """
    peft = pytest.importorskip('peft')
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
    torch.manual_seed(seed)
    adapted = peft.get_peft_model(base, peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=r'.*language_model.*\.(q_proj|v_proj)',
        init_lora_weights=False,
        modules_to_save=['vision_tower'] if vision_tower else None))
    trained = {}
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if '.modules_to_save.' in name:
                parameter.add_(0.05 * torch.randn_like(parameter))
            if 'lora_' in name or '.modules_to_save.' in name:
                trained[name.replace('.default', '')] = parameter.detach().clone()
    adapted.save_pretrained(directory)
    if vision_tower:
        config_file = directory / 'adapter_config.json'
        config = json.loads(config_file.read_text())
        config['modules_to_save'] = ['vision_tower', 'post_layernorm']
        config_file.write_text(json.dumps(config))
    return trained


@pytest.fixture(scope='module')
def adapters(model_dir, tmp_path_factory):
    """One adapter per question: {question: (directory, trained tensors)}."""
    root = tmp_path_factory.mktemp('adapters')
    return {q: (root / q, save_adapter(model_dir, root / q, seed, vision_tower=q == 'progress'))
            for seed, q in enumerate(QUESTIONS)}


def loaded_tensors(client, adapter_name: str) -> dict:
    """Return the client's ``adapter_name`` tensors, named as in ``save_adapter``."""
    return {name.replace(f'.{adapter_name}', ''): p for name, p in client.model.named_parameters()
            if ('lora_' in name or '.modules_to_save.' in name) and f'.{adapter_name}.' in name}


def first_step_logits(client, query) -> torch.Tensor:
    """Return the logits of the first generated token while the client answers ``query``."""
    captured = []
    head = client.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, inputs, output: captured.append(
        output.detach().clone()))
    try:
        client.ask(query)
    finally:
        handle.remove()
    return captured[0]


def test_each_question_runs_with_its_own_adapter_only(model_dir, adapters):
    initial, earlier, current = frames()
    queries = {'contrastive': contrastive_query('open the drawer', earlier, current),
               'progress': progress_query('open the drawer', initial, current),
               'completion': completion_query('open the drawer', current)}
    client = TransformersVlmClient(
        str(model_dir), adapter_dirs={q: str(d) for q, (d, _) in adapters.items()},
        max_new_tokens=2)
    assert client.name == 'local:' + model_dir.name + '+contrastive+progress+completion'
    # Every adapter's weights landed bit for bit, the nested modules_to_save entry included.
    for question, (_, trained) in adapters.items():
        assert loaded_tensors(client, client.adapter_of[question]).keys() == trained.keys()
        assert all(torch.equal(loaded_tensors(client, client.adapter_of[question])[name], value)
                   for name, value in trained.items())
    # A model with only that question's adapter (or none) is the reference for each question.
    references = {q: TransformersVlmClient(str(model_dir), adapter_dirs=str(d), max_new_tokens=2)
                  for q, (d, _) in adapters.items()}
    references['base'] = TransformersVlmClient(str(model_dir), max_new_tokens=2)
    for question, query in queries.items():
        logits = first_step_logits(client, query)
        assert client.model.active_adapter == client.adapter_of[question]
        expected = {name: first_step_logits(reference, query)
                    for name, reference in references.items()}
        assert torch.equal(logits, expected[question]), question
        others = [name for name in expected if name != question]
        assert not any(torch.equal(logits, expected[name]) for name in others), question
    # Switching back and forth changes nothing: the same query gives the same logits.
    contrastive = first_step_logits(client, queries['contrastive'])
    first_step_logits(client, queries['progress'])
    assert torch.equal(first_step_logits(client, queries['contrastive']), contrastive)


def test_merged_progress_adapter_is_a_plain_model_of_the_same_answers(model_dir, adapters,
                                                                      tmp_path):
    from sarm2_reward.lrm.merge_adapter import main

    directory, trained = adapters['progress']
    out = tmp_path / 'merged'
    assert main([str(model_dir), str(directory), str(out)]) == 0
    assert main([str(model_dir), str(directory), str(out)]) == 2      # never overwrites
    merged = TransformersVlmClient(str(out), max_new_tokens=2)       # no peft, as vLLM loads it
    # The fine-tuned vision tower is in the merged weights bit for bit.
    tower = {name.replace('base_model.model.', '').replace('.modules_to_save', ''): value
             for name, value in trained.items() if '.modules_to_save.' in name}
    weights = dict(merged.model.named_parameters())
    assert tower and all(torch.equal(weights[name], value) for name, value in tower.items())
    initial, _, current = frames()
    query = progress_query('open the drawer', initial, current)
    adapted = TransformersVlmClient(str(model_dir), adapter_dirs=str(directory),
                                    max_new_tokens=2)
    # LoRA folded into the weights: the same logits up to float rounding.
    torch.testing.assert_close(first_step_logits(merged, query),
                               first_step_logits(adapted, query), rtol=1e-4, atol=1e-5)


def test_local_provenance_hashes_the_model_and_each_adapter(model_dir, adapters):
    from sarm2_reward.lrm.settings import directory_sha256, VlmSource

    dirs = tuple(str(adapters[q][0]) for q in QUESTIONS)
    record = VlmSource(model_dir=str(model_dir), adapter_dirs=dirs).provenance()
    assert record['source'] == {'model_dir': str(model_dir), 'adapter_dirs': dirs}
    assert record['model_sha256'] == directory_sha256(str(model_dir))
    assert list(record['adapter_sha256']) == list(QUESTIONS)
    assert len(set(record['adapter_sha256'].values())) == 3      # three different adapters


def test_an_all_zero_adapter_is_refused(model_dir, tmp_path):
    peft = pytest.importorskip('peft')
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
    # peft's default init leaves B at zero: exported untrained, the adapter is the base model.
    peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=['q_proj'])).save_pretrained(
        tmp_path / 'untrained')
    with pytest.raises(ValueError, match='all-zero LoRA B'):
        TransformersVlmClient(str(model_dir), adapter_dirs=str(tmp_path / 'untrained'))
