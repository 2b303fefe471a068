"""The ``--lrm-*`` command-line options, shared by spiral_update, spiral_loop and the benches.

They mirror the reward node's ``lrm_*`` parameters; per-question options take three values in
the order contrastive, progress, completion.
"""

import argparse

from .lrm_backend import LrmConfig, MODES
from .settings import VlmSource

PER_QUESTION = ('CONTRASTIVE', 'PROGRESS', 'COMPLETION')
# (flag, nargs) of every option, in the order they are listed; the dest is the flag's name.
_OPTIONS = (('--lrm-endpoint', None), ('--lrm-endpoints', 3), ('--lrm-model', None),
            ('--lrm-models', 3), ('--lrm-model-dir', None), ('--lrm-adapter-dir', None),
            ('--lrm-adapter-dirs', 3), ('--lrm-mode', None), ('--lrm-query-every', None),
            ('--lrm-camera', None), ('--lrm-timeout', None), ('--lrm-device', None))


def add_lrm_arguments(parser: argparse.ArgumentParser, query_every: int = 10) -> None:
    """Add the ``--lrm-*`` options (a served VLM or a local one, and how it is asked)."""
    group = parser.add_argument_group(
        'LRM rewards', 'zero-shot rewards from a vision-language model asked the published '
        'Large Reward Models questions; give --lrm-endpoint(s) + --lrm-model(s) for a served '
        'model (vLLM, SGLang), or --lrm-model-dir for a local one')
    group.add_argument('--lrm-endpoint', default='',
                       help='OpenAI-compatible server URL, e.g. http://gpu-box:8000/v1')
    group.add_argument('--lrm-endpoints', nargs=3, metavar=PER_QUESTION, default=(),
                       help='one server URL per question, instead of --lrm-endpoint')
    group.add_argument('--lrm-model', default='', help='served model name for every question')
    group.add_argument('--lrm-models', nargs=3, metavar=PER_QUESTION, default=(),
                       help='served model name per question, e.g. the names vLLM serves the '
                            'three LoRA adapters under')
    group.add_argument('--lrm-model-dir', default='',
                       help='local transformers VLM directory (save_pretrained layout)')
    group.add_argument('--lrm-adapter-dir', default='',
                       help='LoRA adapter of the local model for every question')
    group.add_argument('--lrm-adapter-dirs', nargs=3, metavar=PER_QUESTION, default=(),
                       help='one LoRA adapter per question for the local model, loaded once '
                            'and switched per query')
    group.add_argument('--lrm-mode', choices=MODES, default='tri',
                       help='reward: tri (mean of the three answers) or one question')
    group.add_argument('--lrm-query-every', type=int, default=query_every,
                       help='frames between queries; the answer is held in between')
    group.add_argument('--lrm-camera', default='',
                       help='the camera the VLM sees (default: the first camera)')
    group.add_argument('--lrm-timeout', type=float, default=30.0,
                       help='s per request to a served model')
    group.add_argument('--lrm-device', default='cpu', help='torch device of a local model')


def lrm_requested(args: argparse.Namespace) -> bool:
    """Return True when the options name a VLM."""
    return bool(args.lrm_endpoint or args.lrm_endpoints or args.lrm_model_dir)


def lrm_from_args(args: argparse.Namespace, default_camera: str
                  ) -> tuple[VlmSource, LrmConfig]:
    """Return the VLM and the query settings the options describe (ValueError says what is off)."""
    source = VlmSource(endpoint=args.lrm_endpoint, endpoints=tuple(args.lrm_endpoints),
                       model=args.lrm_model, models=tuple(args.lrm_models),
                       model_dir=args.lrm_model_dir, adapter_dir=args.lrm_adapter_dir,
                       adapter_dirs=tuple(args.lrm_adapter_dirs), timeout=args.lrm_timeout,
                       device=args.lrm_device)
    config = LrmConfig(camera=args.lrm_camera or default_camera,
                       query_every=args.lrm_query_every, mode=args.lrm_mode)
    return source, config


def lrm_arguments(args: argparse.Namespace) -> list[str]:
    """Return the ``--lrm-*`` options of ``args`` that differ from the defaults, as words."""
    defaults = argparse.ArgumentParser()
    add_lrm_arguments(defaults, query_every=args.lrm_query_every)
    default_values = vars(defaults.parse_args([]))
    words = []
    for flag, nargs in _OPTIONS:
        dest = flag[2:].replace('-', '_')
        value = getattr(args, dest)
        if dest == 'lrm_query_every' or value != default_values[dest]:
            words += [flag, *map(str, value)] if nargs else [flag, str(value)]
    return words


def check_lrm_arguments(words: list[str] | tuple[str, ...]) -> None:
    """Raise ValueError unless ``words`` are valid ``--lrm-*`` options that name a VLM."""
    parser = argparse.ArgumentParser(prog='--lrm-* options', exit_on_error=False)
    add_lrm_arguments(parser)
    try:
        args, unknown = parser.parse_known_args(list(words))
    except argparse.ArgumentError as error:
        raise ValueError(f'LRM options: {error}') from None
    if unknown:
        raise ValueError(f'not LRM options: {unknown}')
    lrm_from_args(args, default_camera='camera')
