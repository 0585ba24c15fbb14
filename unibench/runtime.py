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


def torch_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[str, Any]:
    """``device`` / ``dtype`` option values -> (device string, torch dtype).

    auto device: cuda when available, else cpu. auto dtype: bfloat16 on cuda
    (float16 where bf16 is unsupported), float32 on cpu.
    """
    import torch

    if device in ("", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{device}': no CUDA GPU is visible to torch (use device=cpu or auto)")
    if dtype in ("", "auto"):
        if device.startswith("cuda"):
            return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return device, torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise UserError(f"dtype '{dtype}' is not one of auto, {', '.join(names)}")
    return device, names[dtype]
