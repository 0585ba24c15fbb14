"""Loading the benchmark's .npz files without trusting their pickles.

Label and answer files store pickled dicts (``allow_pickle=True``). A pickle
can run arbitrary code on load, so we unpickle with an allow-list of the few
types these files need: builtins containers and scalars, numpy scalars and
arrays. Anything else is refused with a message naming the file.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from unibench.errors import UserError

_ALLOWED = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "str"), ("builtins", "int"), ("builtins", "float"),
    ("builtins", "bool"), ("builtins", "complex"), ("builtins", "bytes"), ("builtins", "bytearray"),
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "numpy" and name.endswith("DType"):  # numpy>=2 dtype classes
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def _restricted_loads(data: bytes) -> Any:
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def _read_array(zf: zipfile.ZipFile, member: str) -> np.ndarray:
    from numpy.lib import format as npformat

    with zf.open(member) as fh:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = npformat.read_array_header_2_0(fh)
        if dtype.hasobject:
            # numpy writes object arrays as one pickle after the header
            return _restricted_loads(fh.read())
        count = int(np.prod(shape)) if shape else 1
        data = fh.read()
        arr = np.frombuffer(data, dtype=dtype, count=count)
        return arr.reshape(shape, order="F" if fortran else "C")


def load_npz(path: str | Path, keys: list[str] | None = None) -> dict[str, Any]:
    """Read the named arrays of an .npz file (all when ``keys`` is None).

    Object arrays come back as whatever the restricted pickle holds (a 0-d
    object array holding a dict comes back as that dict via ``.tolist()``).
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None
    out: dict[str, Any] = {}
    with zf:
        members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
        wanted = list(members) if keys is None else keys
        for key in wanted:
            if key not in members:
                raise UserError(f"{path}: key '{key}' not found (keys: {', '.join(sorted(members)) or 'none'})")
            try:
                value = _read_array(zf, members[key])
            except pickle.UnpicklingError as exc:
                raise UserError(f"{path}: key '{key}': unsafe or corrupt pickle ({exc}); "
                                "only dicts, lists, strings, numbers and numpy arrays are accepted") from None
            except (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib_error()) as exc:
                raise UserError(f"{path}: key '{key}': truncated or corrupt ({exc})") from None
            if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
                value = value.item()
            out[key] = value
    return out


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error
