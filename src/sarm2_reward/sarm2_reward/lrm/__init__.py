"""Large-Reward-Model backend: zero-shot rewards from a vision-language model.

A VLM answers three questions about the current frames (LRM, USC/TRI): temporal-contrastive
(is the later frame more complete), progress (0.0..1.0 in steps of 0.1) and completion (yes/no).
``questions`` holds the prompts and the strict answer parsing, ``vlm_clients`` the ways to reach a
model (an OpenAI-compatible HTTP server, or a local ``transformers`` model), ``lrm_backend`` the
asynchronous reward backend used by the reward node and offline relabeling.
"""
