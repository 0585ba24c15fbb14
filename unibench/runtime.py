"""What adapters need at run time: the user turn, the status line of their requirements, device and dtype.

Leaf module: adapters import it; it imports nothing of the harness but its errors.
"""
from __future__ import annotations

from typing import Any

from unibench.errors import UserError

SUBTITLE_LEAD = "The subtitle of this video is: "


def user_text(sample: Any, lead: str = SUBTITLE_LEAD) -> str:
    """The text of one user turn of a ``Sample``: the subtitle (when the sample carries it separately), then the
    question."""
    subtitle = sample.subtitle.strip()
    return f"{lead}{subtitle}\n{sample.question}" if subtitle else sample.question


_TRANSFORMERS_NAMES: set[str] | None = None


def transformers_names() -> set[str]:
    """Public names of the installed transformers (its lazy module: classes are not imported)."""
    global _TRANSFORMERS_NAMES
    if _TRANSFORMERS_NAMES is None:
        import transformers

        _TRANSFORMERS_NAMES = set(dir(transformers))
    return _TRANSFORMERS_NAMES


def requirement_status(packages: tuple[str | tuple[str, str], ...] = (),
                       transformers_classes: tuple[str, ...] = ()) -> str:
    """'ready', 'needs pip install X' or 'transformers V lacks class C', for ``Adapter.status()``.

    ``packages`` are import names, or (import name, pip name) pairs. Only
    ``importlib.util.find_spec`` is used for packages, so listing models never
    imports torch; class checks read transformers' lazy name table.
    """
    import importlib.util
    from importlib import metadata

    for pkg in packages:
        module, pip_name = (pkg, pkg) if isinstance(pkg, str) else pkg
        if importlib.util.find_spec(module) is None:
            return f"needs pip install {pip_name}"
    if transformers_classes:
        if importlib.util.find_spec("transformers") is None:
            return "needs pip install transformers"
        missing = [c for c in transformers_classes if c not in transformers_names()]
        if missing:
            return f"transformers {metadata.version('transformers')} lacks class {missing[0]}"
    return "ready"


DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
               "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_device(value: str = "auto", spread: bool = False, what: str = "device") -> str:
    """A ``device`` option -> 'cpu', 'mps', 'cuda', 'cuda:N' (or 'auto' with ``spread``: let transformers'
    ``device_map='auto'`` spread a model over the GPUs). The one resolver every adapter and extractor uses."""
    import torch

    value = (value or "auto").strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "auto" if spread else "cuda"
        return "cpu"
    if value not in ("cpu", "mps") and not (value == "cuda" or (value.startswith("cuda:") and value[5:].isdigit())):
        raise UserError(f"{what}={value}: expected auto, cpu, cuda, cuda:N or mps")
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{what}={value}: no CUDA GPU is visible to torch (use {what}=cpu or auto)")
    return value


def resolve_dtype(value: str = "auto", device: str = "cpu", what: str = "dtype") -> Any:
    """A ``dtype`` option -> a torch dtype. auto: float32 on cpu, float16 on mps, bfloat16 on a GPU that has
    it (else float16). Names: float32/fp32, float16/fp16/half, bfloat16/bf16."""
    import torch

    value = (value or "auto").strip().lower()
    if value == "auto":
        if device == "cpu":
            return torch.float32
        if device == "mps":
            return torch.float16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if value not in DTYPE_NAMES:
        raise UserError(f"{what}={value}: expected auto or one of {', '.join(DTYPE_NAMES)}")
    return getattr(torch, DTYPE_NAMES[value])


def torch_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[str, Any]:
    """``device`` / ``dtype`` option values -> (device string, torch dtype); see :func:`resolve_device` and
    :func:`resolve_dtype`."""
    device = resolve_device(device)
    return device, resolve_dtype(dtype, device)
