"""`lrm_merge_adapter`: fold a LoRA adapter, whole-module weights included, into its base model.

vLLM (and SGLang) serve LoRA adapters under their own names only when an adapter changes no
whole module: vLLM refuses any adapter with ``modules_to_save``. The published LRM progress
adapter fine-tunes Qwen3-VL's vision tower that way (the source server's loader says so), so it
cannot be served as a LoRA; merged into the base with this tool it is an ordinary model
directory that ``vllm serve`` loads. The contrastive and completion adapters change only the
language model and are served as LoRA adapters of the unmodified base.

Loading goes through the LRM client's loader (``vlm_clients.load_adapters``), so an adapter that
does not fit the base fails here, with the tensors named, instead of serving the base model.
"""

import argparse
from pathlib import Path
import shutil
import sys


def merge_adapter(model_dir: str, adapter_dir: str, out: Path) -> Path:
    """Write ``model_dir`` with ``adapter_dir`` merged into ``out`` (safetensors + processor)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .questions import QUESTIONS
    from .vlm_clients import check_directory, load_adapters

    check_directory('model', model_dir, 'config.json')
    check_directory('adapter', adapter_dir, 'adapter_config.json')
    if out.exists() and any(out.iterdir()):
        raise ValueError(f'{out} is not empty: give a new directory')
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True,
                                                        dtype='auto')
    peft_model, _ = load_adapters(model, dict.fromkeys(QUESTIONS, adapter_dir))
    merged = peft_model.merge_and_unload()
    partial = out.with_name(out.name + '.partial')
    shutil.rmtree(partial, ignore_errors=True)
    merged.save_pretrained(partial)
    AutoProcessor.from_pretrained(model_dir, local_files_only=True).save_pretrained(partial)
    partial.replace(out)
    return out


def main(argv=None) -> int:
    """Merge one adapter; exit 2 with one line on bad input."""
    parser = argparse.ArgumentParser(
        prog='lrm_merge_adapter', description=__doc__.split('\n\n')[0],
        epilog='e.g. lrm_merge_adapter /models/Qwen3-VL-8B-Instruct /models/LRM-models/progress '
               '/models/lrm-progress-merged, then vllm serve /models/lrm-progress-merged '
               '--served-model-name lrm-progress')
    parser.add_argument('model_dir', help='base model directory (save_pretrained layout)')
    parser.add_argument('adapter_dir', help='peft LoRA adapter directory')
    parser.add_argument('out', type=Path, help='new directory for the merged model')
    args = parser.parse_args(argv)
    try:
        merge_adapter(args.model_dir, args.adapter_dir, args.out)
    except (ValueError, OSError) as error:
        print(f'lrm_merge_adapter: {error}', file=sys.stderr)
        return 2
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
