"""One device/dtype resolver for every adapter and extractor (unibench.runtime)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from unibench.adapters import hf_common  # noqa: E402
from unibench.errors import UserError  # noqa: E402
from unibench.runtime import resolve_device, resolve_dtype, torch_device_dtype  # noqa: E402


@pytest.mark.parametrize("name,want", [("bf16", "bfloat16"), ("bfloat16", "bfloat16"), ("fp16", "float16"),
                                       ("half", "float16"), ("float32", "float32"), ("FP32", "float32")])
def test_every_spelling_is_accepted_by_every_caller(name, want):
    assert resolve_dtype(name, "cpu") == getattr(torch, want)
    assert hf_common.resolve_dtype(name, "cpu") == getattr(torch, want)
    assert torch_device_dtype("cpu", name) == ("cpu", getattr(torch, want))


def test_auto_dtype_per_device():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "mps") == torch.float16 == hf_common.resolve_dtype("auto", "mps")


def test_devices():
    assert resolve_device("cpu") == "cpu" and resolve_device("MPS") == "mps"
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu" and resolve_device("auto", spread=True) == "cpu"
        with pytest.raises(UserError, match="device=cuda:1: no CUDA GPU"):
            resolve_device("cuda:1")
    for bad in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(UserError, match="expected auto, cpu, cuda, cuda:N or mps"):
            resolve_device(bad)
    with pytest.raises(UserError, match="dtype=int8: expected auto or one of"):
        resolve_dtype("int8", "cpu")
