"""Large-Reward-Model backend: zero-shot rewards from a vision-language model.

A VLM answers three questions about the current frame (LRM, Wu et al. 2026), asked the way the
published LRM adapters were trained: temporal-contrastive (is the current frame closer to
completion than the previous query's), progress (0.0..1.0 from the episode's first frame) and
completion (yes/no). ``questions`` holds the prompts and the answer parsing, ``vlm_clients`` the
ways to reach a model (OpenAI-compatible HTTP servers, or a local ``transformers`` model with one
LoRA adapter per question), ``settings`` how to name the VLM, ``lrm_backend`` the asynchronous
reward backend used by the reward node and offline relabeling.
"""
