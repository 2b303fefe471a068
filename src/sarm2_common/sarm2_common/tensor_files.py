"""Reading safetensors files with errors a user can act on (torch is imported on first use).

Every checkpoint of the stack keeps its tensors in safetensors files (never pickle). A truncated
file, a pickle renamed to ``.safetensors`` or a missing file raise ``ValueError`` naming the
file, so command lines print one line and nodes report it in /diagnostics.
"""

from pathlib import Path


def load_tensors(path: str | Path) -> dict:
    """Return the tensors of a safetensors file; ValueError naming the file if it is unusable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f'{path}: missing')
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f'{path}: not a readable safetensors file ({exc})') from None
