"""Loading the benchmark's .npz files without trusting them.

Label and answer files store pickled dicts (``allow_pickle=True``). A pickle
can run arbitrary code on load, so we unpickle with an allow-list of the few
types these files need: builtins containers and scalars, numpy scalars and
arrays. Anything else is refused with a message naming the file.

A file can also be hostile without running code, by exhausting resources. So
every read is bounded by :class:`InputLimits`:

* ``max_member_mb``: how much one member of the .npz may decompress to. Members
  are read in 1 MiB chunks whatever the zip header declares, and a .npy header
  that declares a bigger array is refused before anything is allocated.
* ``max_objects``: how many objects one pickle may create (every pickle
  opcode counts, and so do the items a container call copies), and how many
  objects the loaded value may hold when walked as a tree, so a structure made
  of shared references ("a list holding the same list twice", 40 levels deep)
  is refused instead of exploding in whoever walks it.
* ``max_depth``: how deeply containers may nest.

Pickles are run by a pure-Python unpickler (``_BoundedUnpickler``), not the C
one: the C unpickler sizes its memo from the indices in the data (a 10-byte
pickle makes it allocate and clear gigabytes), calls allowed constructors with
any arguments (``bytes(10**12)``, ``_reconstruct(ndarray, (10**10,), 'O')``),
hands numpy states it does not check (a malformed dtype state segfaults), and
cannot see dict insertions, which duplicate detection needs. Here calls are
charged before they run, dtypes are rebuilt by numpy's constructors instead
of ``__setstate__``, keys are walked before they are hashed, and object arrays
are emptied before they are freed (numpy frees nested ones recursively in C).
The opcodes numpy's pickles consist of run inline, so a replay of 14 answer
files costs ~15 ms more than the C unpickler (benchmarks/npz_limits.py).

Duplicate dict keys (a pickle can set the same key twice; the last copy would
silently win) are recorded: equal copies are counted once and reported through
``notes``, different copies are refused. :func:`check_unique_names` applies
the same rule to name arrays.

The limits come from, in order: :func:`set_limits` (the CLI's
``--input-limits``), the environment variable ``UNIBENCH_INPUT_LIMITS``, the
defaults. Both take the text form parsed by :func:`parse_limits`, e.g.
``max_member_mb=4096,max_objects=50000000``.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import struct
import sys
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from unibench.errors import UserError

ENV_VAR = "UNIBENCH_INPUT_LIMITS"
_MB = 1 << 20


# ---------------------------------------------------------------- limits

@dataclass(frozen=True)
class InputLimits:
    """Resource bounds for reading one .npz member (see the module docstring).

    Defaults leave a wide margin over the benchmark's real files (largest
    member 1.7 MB decompressed, largest pickle ~50k opcodes, nesting 3 levels)
    while keeping a hostile file's cost to about a gigabyte: 1024 MB of
    decompressed data, 10 million objects (empty containers cost 60-220 bytes
    each, so 0.6-2 GB at worst), 100 nesting levels (Python's own recursion
    limit is 1000; numpy object arrays and tuple hashing crash the interpreter
    long before 100k levels).
    """

    max_member_mb: float = 1024.0
    max_objects: int = 10_000_000
    max_depth: int = 100

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and value > 0 and (f.name == "max_member_mb" or float(value).is_integer()))
            if not ok:
                kind = "a positive number" if f.name == "max_member_mb" else "a positive whole number"
                raise UserError(f"input limits: {f.name} must be {kind}, got {value!r}")
        object.__setattr__(self, "max_objects", int(self.max_objects))
        object.__setattr__(self, "max_depth", int(self.max_depth))

    @property
    def max_member_bytes(self) -> int:
        return int(self.max_member_mb * _MB)

    def as_text(self) -> str:
        """The form :func:`parse_limits` reads: ``max_member_mb=1024,max_objects=10000000,max_depth=100``."""
        mb = int(self.max_member_mb) if float(self.max_member_mb).is_integer() else self.max_member_mb
        return f"max_member_mb={mb},max_objects={self.max_objects},max_depth={self.max_depth}"


LIMIT_NAMES = tuple(f.name for f in fields(InputLimits))
_explicit: InputLimits | None = None


def parse_limits(text: str, base: InputLimits | None = None, source: str = "--input-limits") -> InputLimits:
    """``"max_member_mb=2048,max_objects=20000000,max_depth=200"`` -> InputLimits.

    Settings not named keep their value from ``base`` (default: the built-in
    defaults). An unknown name or a bad value raises UserError naming it and
    ``source`` (the flag or variable the text came from).
    """
    changes: dict[str, Any] = {}
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        name, eq, raw = (s.strip() for s in item.partition("="))
        if name not in LIMIT_NAMES:
            raise UserError(f"{source}: unknown limit '{name}' in '{item}' (known: {', '.join(LIMIT_NAMES)})")
        if not eq or not raw:
            raise UserError(f"{source}: '{item}' needs a value, e.g. {name}={getattr(InputLimits(), name)}")
        changes[name] = _parse_value(name, raw, source)
    try:
        return replace(base or InputLimits(), **changes)
    except UserError as exc:
        raise UserError(f"{source}: {str(exc).removeprefix('input limits: ')}") from None


def _parse_value(name: str, raw: str, source: str) -> float | int:
    whole = name != "max_member_mb"
    try:
        value = float(raw.replace("_", ""))
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0 and (not whole or value.is_integer())):
        kind = "a positive whole number" if whole else "a positive number of megabytes"
        raise UserError(f"{source}: {name} must be {kind}, got '{raw}'")
    return int(value) if whole else value


def get_limits() -> InputLimits:
    """The limits in force: set_limits() if called, else UNIBENCH_INPUT_LIMITS, else the defaults."""
    if _explicit is not None:
        return _explicit
    text = os.environ.get(ENV_VAR, "").strip()
    return parse_limits(text, source=ENV_VAR) if text else InputLimits()


def set_limits(limits: InputLimits | str | None = None, **changes: float) -> InputLimits | None:
    """Set the limits for this process and return the previous explicit setting.

    ``limits`` is an InputLimits, or text for :func:`parse_limits` (settings
    it does not name keep their current value, so ``--input-limits`` refines
    UNIBENCH_INPUT_LIMITS), or None to go back to the environment/defaults.
    Keyword arguments change single settings: ``set_limits(max_member_mb=4096)``.
    Restore with ``set_limits(previous)``.
    """
    global _explicit
    previous = _explicit
    if isinstance(limits, str):
        new: InputLimits | None = parse_limits(limits, base=get_limits())
    elif limits is None or isinstance(limits, InputLimits):
        new = limits
    else:
        raise TypeError(f"set_limits() takes InputLimits, text or None, not {type(limits).__name__}")
    if changes:
        unknown = sorted(set(changes) - set(LIMIT_NAMES))
        if unknown:
            raise UserError(f"input limits: unknown limit '{unknown[0]}' (known: {', '.join(LIMIT_NAMES)})")
        new = replace(new or get_limits(), **changes)
    _explicit = new
    return previous


def _hint(name: str) -> str:
    return f" (limit; raise it with --input-limits {name}=... or {ENV_VAR})"


class _Refused(Exception):
    """A limit was exceeded or the member is refused: ``message`` completes "<file>: key 'K': ..."."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _too_many(limit: int, walked: bool = False) -> _Refused:
    what = " (shared references?)" if walked else ""
    return _Refused(f"holds more than {limit} objects{what}{_hint('max_objects')}")


def _too_deep(limit: int, cycle: bool = False) -> _Refused:
    what = " (it contains itself)" if cycle else ""
    return _Refused(f"nested more than {limit} levels deep{what}{_hint('max_depth')}")


def _too_big(limit_bytes: int, what: str = "decompresses to") -> _Refused:
    return _Refused(f"{what} more than {limit_bytes / _MB:g} MB{_hint('max_member_mb')}")


# ---------------------------------------------------------------- walking a value as a tree

_NoneType = type(None)
# types whose hash and repr never recurse and that hold no other object
_LEAF_TYPES = frozenset({
    str, int, float, bool, _NoneType, bytes, complex,
    np.str_, np.bytes_, np.bool_, np.float16, np.float32, np.float64, np.longdouble,
    np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.complex64, np.complex128,
})


def _children(obj: Any) -> tuple[list | None, int]:
    """(the sub-objects worth walking, how many leaf children) of a container; (None, 0) for a leaf."""
    t = type(obj)
    if t is dict or t is OrderedDict:
        if _LEAF_TYPES.issuperset(map(type, obj.values())) and _LEAF_TYPES.issuperset(map(type, obj)):
            return [], 2 * len(obj)
        kids = [v for v in obj.values() if type(v) not in _LEAF_TYPES]
        keys = [k for k in obj if type(k) not in _LEAF_TYPES]
        if keys:
            kids += keys
        return kids, 2 * len(obj) - len(kids)
    if t is list or t is tuple or t is set or t is frozenset:
        kids = [v for v in obj if type(v) not in _LEAF_TYPES]
        return kids, len(obj) - len(kids)
    if isinstance(obj, np.ndarray):
        if not obj.dtype.hasobject:
            return None, 0
        items = obj.ravel().tolist() if obj.dtype.names else list(obj.flat)
        kids = [v for v in items if type(v) not in _LEAF_TYPES]
        return kids, len(items) - len(kids)
    if isinstance(obj, np.dtype) and (obj.fields or obj.subdtype):
        kids = [f[0] for f in obj.fields.values()] if obj.fields else []
        if obj.subdtype:
            kids.append(obj.subdtype[0])
        return kids, 0
    return None, 0


def _measure(root: Any, max_objects: int, max_depth: int, done: dict | None = None) -> tuple[int, int]:
    """Size and nesting depth of ``root`` walked as a tree, without recursion.

    Shared references count once per reference (so the result bounds the work
    of anyone who walks the value naively), computed in time proportional to
    the distinct objects: results are memoised by id in ``done`` (every
    container reached except small dicts of leaves, which are recounted).
    Raises _Refused past ``max_objects`` objects or ``max_depth`` levels, or on
    a cycle.
    """
    kids, leaves = _children(root)
    if kids is None:
        return 1, 0
    if done is None:
        done = {}
    leaf_types = _LEAF_TYPES
    on_path = {id(root)}
    stack = [[root, kids, 0, 1 + leaves, 1]]      # object, children, next child, size, height
    while True:
        frame = stack[-1]
        kids = frame[1]
        i = frame[2]
        if i < len(kids):
            kid = kids[i]
            frame[2] = i + 1
            t = type(kid)
            if t is dict and len(kid) <= 16 and leaf_types.issuperset(map(type, kid.values())) \
                    and leaf_types.issuperset(map(type, kid)):
                # a small dict of leaves (a label's {'emo': .., 'val': ..}): cheap to recount
                # at every reference, so it needs no memo entry
                if len(stack) >= max_depth:
                    raise _too_deep(max_depth)
                size, height = 1 + 2 * len(kid), 1
                frame[3] += size
                if frame[4] < 2:
                    frame[4] = 2
                if frame[3] > max_objects:
                    raise _too_many(max_objects, walked=True)
                continue
            got = done.get(id(kid))
            if got is None:
                if id(kid) in on_path:
                    raise _too_deep(max_depth, cycle=True)
                sub, leaves = _children(kid)
                if sub is None:
                    frame[3] += 1
                    continue
                if len(stack) >= max_depth:
                    raise _too_deep(max_depth)
                if not sub:                        # only leaves below: no frame needed
                    got = (1 + leaves, 1)
                    done[id(kid)] = got
                else:
                    on_path.add(id(kid))
                    stack.append([kid, sub, 0, 1 + leaves, 1])
                    continue
            size, height = got
        else:
            stack.pop()
            obj, size, height = frame[0], frame[3], frame[4]
            on_path.discard(id(obj))
            done[id(obj)] = (size, height)
            if size > max_objects:
                raise _too_many(max_objects, walked=True)
            if not stack:
                return size, height
            frame = stack[-1]
        frame[3] += size
        if height >= frame[4]:
            frame[4] = height + 1
        if frame[3] > max_objects:
            raise _too_many(max_objects, walked=True)


def check_value(value: Any, limits: InputLimits | None = None) -> tuple[int, int]:
    """(objects, depth) of ``value`` walked as a tree; raises UserError past the limits.

    For values that did not come through :func:`load_npz` (which checks its own).
    """
    limits = limits or get_limits()
    try:
        return _measure(value, limits.max_objects, limits.max_depth)
    except _Refused as exc:
        raise UserError(exc.message) from None


def _same(a: Any, b: Any) -> bool:
    """Equality that never raises (arrays compare elementwise; errors mean 'different')."""
    if a is b:
        return True
    try:
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return bool(np.array_equal(a, b))
        return bool(a == b)
    except Exception:
        return False


# ---------------------------------------------------------------- the bounded unpickler

def _numpy_callables() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:                               # numpy < 2
        from numpy.core import multiarray, numeric    # type: ignore[no-redef]
    out: dict[tuple[str, str], Any] = {}
    for package in ("numpy.core", "numpy._core"):
        out[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        out[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return out


_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "tuple"): tuple,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "str"): str,
    ("builtins", "int"): int, ("builtins", "float"): float, ("builtins", "bool"): bool,
    ("builtins", "complex"): complex, ("builtins", "bytes"): bytes, ("builtins", "bytearray"): bytearray,
    ("collections", "OrderedDict"): OrderedDict,
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
    **_numpy_callables(),
}
_RECONSTRUCT = _ALLOWED[("numpy.core.multiarray", "_reconstruct")]
_SCALAR = _ALLOWED[("numpy.core.multiarray", "scalar")]
_FROMBUFFER = _ALLOWED[("numpy.core.numeric", "_frombuffer")]
_ALLOWED_IDS = frozenset(id(obj) for obj in _ALLOWED.values())   # the objects live as long as the module
_MUTABLE_NEW = (list, dict, set, OrderedDict, bytearray)   # __new__ ignores its arguments

_P = pickle._Unpickler


class _BoundedUnpickler(_P):
    """The pure-Python unpickler with an allow-list, resource bounds and duplicate-key records.

    ``load`` runs its own loop over the bytes: the opcodes numpy's pickles are
    made of are handled inline (fast), the rest by the stock methods, some of
    them replaced below by guarded versions.
    """

    dispatch = dict(_P.dispatch)

    def __init__(self, data: bytes, limits: InputLimits):
        self._data = data
        self._file = io.BytesIO(data)
        super().__init__(self._file)
        self.read, self.readline, self.readinto = self._file.read, self._file.readline, self._file.readinto
        self.max_objects = limits.max_objects
        self.max_depth = limits.max_depth
        self.max_bytes = limits.max_member_bytes
        self.extra_objects = 0     # charged by calls, key hashing and comparisons
        self.made_bytes = 0        # data built by calls (arrays, bytes, strings)
        self.dups: list[tuple[Any, Any, Any, Any]] = []    # (dict, key, earlier value, later value)
        self.object_arrays: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------ budgets

    def charge(self, objects: int) -> None:
        self.extra_objects += objects
        if self.extra_objects > self.max_objects:
            raise _too_many(self.max_objects)

    def charge_bytes(self, nbytes: int) -> None:
        self.made_bytes += nbytes
        if self.made_bytes > self.max_bytes:
            raise _too_big(self.max_bytes, "builds")

    def walk(self, value: Any) -> None:
        """Bound a value's tree size and depth before hashing it, comparing it or passing it to a call."""
        if type(value) not in _LEAF_TYPES:
            self.charge(_measure(value, self.max_objects, self.max_depth)[0])

    def find_class(self, module: str, name: str) -> Any:
        obj = _ALLOWED.get((module, name))
        if obj is not None:
            return obj
        if module == "numpy" and name.endswith("DType"):  # numpy>=2 dtype classes
            cls = getattr(np, name, None)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                return cls
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")

    # ------------------------------------------------------------ the loop

    def load(self) -> Any:
        data = self._data
        n = len(data)
        pos = 0
        memo = self.memo
        metastack = self.metastack = []
        stack = self.stack = []
        append = self.append = stack.append
        dispatch = self.dispatch
        f = self._file
        from_bytes = int.from_bytes
        unpack_double = struct.Struct(">d").unpack_from
        unpack_uint = struct.Struct("<I").unpack_from
        leaf_types = _LEAF_TYPES
        scalar = _SCALAR
        dtype_type = np.dtype
        max_ops = self.max_objects
        count_ops = n > max_ops     # each opcode takes at least one byte: shorter pickles cannot exceed it
        ops = 0
        try:
            while True:
                op = data[pos]      # IndexError past the end: truncated
                pos += 1
                if count_ops:
                    ops += 1
                    if ops > max_ops:
                        raise _too_many(max_ops)
                if op == 114:                                   # LONG_BINPUT
                    memo[unpack_uint(data, pos)[0]] = stack[-1]
                    pos += 4
                elif op == 88:                                  # BINUNICODE
                    start = pos + 4
                    pos = start + unpack_uint(data, pos)[0]
                    if pos > n:
                        raise pickle.UnpicklingError("pickle data was truncated")
                    append(str(data[start:pos], "utf-8", "surrogatepass"))
                elif op == 104:                                 # BINGET
                    append(memo[data[pos]])
                    pos += 1
                elif op == 113:                                 # BINPUT
                    memo[data[pos]] = stack[-1]
                    pos += 1
                elif op == 106:                                 # LONG_BINGET
                    append(memo[unpack_uint(data, pos)[0]])
                    pos += 4
                elif op == 140:                                 # SHORT_BINUNICODE
                    start = pos + 1
                    pos = start + data[pos]
                    if pos > n:
                        raise pickle.UnpicklingError("pickle data was truncated")
                    append(str(data[start:pos], "utf-8", "surrogatepass"))
                elif op == 148:                                 # MEMOIZE
                    memo[len(memo)] = stack[-1]
                elif op == 40:                                  # MARK
                    metastack.append(stack)
                    stack = self.stack = []
                    append = self.append = stack.append
                elif op == 93:                                  # EMPTY_LIST
                    append([])
                elif op == 125:                                 # EMPTY_DICT
                    append({})
                elif op == 117:                                 # SETITEMS
                    items = stack
                    stack = self.stack = metastack.pop()
                    append = self.append = stack.append
                    target = stack[-1]
                    if type(target) is dict and not target and len(items) == 4 and \
                            type(items[0]) in leaf_types and type(items[2]) in leaf_types:
                        target[items[0]] = items[1]             # a fresh two-key dict: a label's emo/val
                        target[items[2]] = items[3]
                        if len(target) != 2:                    # the same key twice: redo, recording it
                            target.clear()
                            self.setitems(target, items)
                    else:
                        self.setitems(target, items)
                elif op == 97:                                  # APPEND
                    value = stack.pop()
                    target = stack[-1]
                    if type(target) is list:
                        target.append(value)
                    else:
                        self.appends_other(target, [value])
                elif op == 101:                                 # APPENDS
                    items = stack
                    stack = self.stack = metastack.pop()
                    append = self.append = stack.append
                    target = stack[-1]
                    if type(target) is list:
                        target.extend(items)
                    else:
                        self.appends_other(target, items)
                elif op == 71:                                  # BINFLOAT
                    append(unpack_double(data, pos)[0])
                    pos += 8
                elif op == 75:                                  # BININT1
                    append(data[pos])
                    pos += 1
                elif op == 74:                                  # BININT
                    append(from_bytes(data[pos:pos + 4], "little", signed=True))
                    pos += 4
                elif op == 82:                                  # REDUCE
                    args = stack.pop()
                    func = stack[-1]
                    if func is scalar and type(args) is tuple and len(args) == 2 and type(args[1]) is bytes \
                            and isinstance(args[0], dtype_type) and args[0].names is None \
                            and not args[0].hasobject:        # a numpy number: one per value in a label file
                        self.made_bytes += args[0].itemsize
                        if self.made_bytes > self.max_bytes:
                            raise _too_big(self.max_bytes, "builds")
                        stack[-1] = scalar(*args)
                    else:
                        stack[-1] = self.call(func, args, None)
                elif op == 67:                                  # SHORT_BINBYTES
                    end = pos + 1 + data[pos]
                    if end > n:
                        raise pickle.UnpicklingError("pickle data was truncated")
                    append(data[pos + 1:end])
                    pos = end
                elif op == 134:                                 # TUPLE2
                    stack[-2:] = [(stack[-2], stack[-1])]
                elif op == 133:                                 # TUPLE1
                    stack[-1] = (stack[-1],)
                elif op == 135:                                 # TUPLE3
                    stack[-3:] = [(stack[-3], stack[-2], stack[-1])]
                elif op == 41:                                  # EMPTY_TUPLE
                    append(())
                elif op == 78:                                  # NONE
                    append(None)
                elif op == 136:                                 # NEWTRUE
                    append(True)
                elif op == 137:                                 # NEWFALSE
                    append(False)
                elif op == 115:                                 # SETITEM
                    value = stack.pop()
                    key = stack.pop()
                    self.setitems(stack[-1], [key, value])
                elif op == 149:                                 # FRAME: only a hint for buffering
                    pos += 8
                elif op == 46:                                  # STOP
                    return stack.pop()
                else:
                    handler = dispatch.get(op)
                    if handler is None:
                        raise pickle.UnpicklingError(f"invalid load key, {bytes([op])!r}")
                    f.seek(pos)
                    handler(self)
                    pos = f.tell()
                    stack = self.stack
                    append = self.append
        except (_Refused, pickle.UnpicklingError, MemoryError, RecursionError):
            raise
        except KeyError as exc:
            raise pickle.UnpicklingError(f"memo value not found at index {exc}") from None
        except IndexError as exc:
            if pos >= n:
                raise pickle.UnpicklingError("pickle data was truncated") from None
            raise pickle.UnpicklingError(f"corrupt pickle data (IndexError: {exc})") from None
        except Exception as exc:
            text = str(exc)
            text = text if len(text) <= 200 else text[:200] + "..."
            raise pickle.UnpicklingError(f"corrupt pickle data ({type(exc).__name__}: {text})") from None

    # ------------------------------------------------------------ containers

    def setitems(self, target: Any, items: list) -> None:
        if len(items) % 2:
            raise pickle.UnpicklingError("odd number of items for SETITEMS")
        if type(target) is dict:
            keys = items[0::2]
            if _LEAF_TYPES.issuperset(map(type, keys)):       # hashing them cannot recurse
                if not target:                                  # a fresh dict: the usual case
                    target.update(zip(keys, items[1::2]))
                    if len(target) == len(keys):
                        return
                    target.clear()                              # a key came twice: redo, recording it
                else:
                    batch = dict(zip(keys, items[1::2]))
                    if len(batch) == len(keys) and target.keys().isdisjoint(batch):
                        target.update(batch)
                        return
        if isinstance(target, dict):
            for i in range(0, len(items), 2):
                key, value = items[i], items[i + 1]
                self.walk(key)
                if key in target:
                    self.dups.append((target, key, target[key], value))
                target[key] = value
        else:                               # a list or an array: item assignment, as pickle does
            for i in range(0, len(items), 2):
                self.walk(items[i])
                target[items[i]] = items[i + 1]

    def appends_other(self, target: Any, items: list) -> None:
        if type(target) is not bytearray:         # only builtins, whose methods no pickle can replace
            raise pickle.UnpicklingError(f"cannot append to a {type(target).__name__}")
        target.extend(items)

    def load_dict(self) -> None:
        items = self.pop_mark()
        d: dict = {}
        self.setitems(d, items)
        self.append(d)

    def load_additems(self) -> None:
        items = self.pop_mark()
        for item in items:
            self.walk(item)
        target = self.stack[-1]
        if type(target) is not set:
            raise pickle.UnpicklingError(f"cannot add items to a {type(target).__name__}")
        target.update(items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        for item in items:
            self.walk(item)
        self.append(frozenset(items))

    def load_bytearray8(self) -> None:
        size, = struct.unpack("<Q", self.read(8))
        if size > len(self._data) - self._file.tell():
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(self.read(size)))

    # ------------------------------------------------------------ calls and state

    def call(self, func: Any, args: Any, kwargs: dict | None, new: bool = False) -> Any:
        """``func(*args, **kwargs)`` (``func.__new__(func, ...)`` when ``new``), for allowed callables only,
        after charging what the call will build."""
        if type(args) is not tuple:
            raise pickle.UnpicklingError(f"call arguments are {type(args).__name__}, not a tuple")
        if kwargs is not None and type(kwargs) is not dict:
            raise pickle.UnpicklingError(f"call keyword arguments are {type(kwargs).__name__}, not a dict")
        kwargs = kwargs or {}
        if id(func) not in _ALLOWED_IDS and not (isinstance(func, type) and issubclass(func, np.dtype)):
            raise pickle.UnpicklingError(f"refused to call {type(func).__name__} {func!r:.80}")
        for value in args:
            self.walk(value)
        for value in kwargs.values():
            self.walk(value)
        if new and func in _MUTABLE_NEW:
            return func.__new__(func)
        if func is dict or func is OrderedDict:
            result = self.make_dict(func, args, kwargs)
        else:
            self.charge_call(func, args, kwargs)
            result = func.__new__(func, *args, **kwargs) if new else func(*args, **kwargs)
        if isinstance(result, np.ndarray) and result.dtype.hasobject:
            self.object_arrays[id(result)] = result
        return result

    def make_dict(self, cls: type, args: tuple, kwargs: dict) -> dict:
        """``dict(pairs, **kwargs)`` / ``OrderedDict(...)``, recording keys given twice."""
        if len(args) > 1:
            raise TypeError(f"{cls.__name__} expected at most 1 argument, got {len(args)}")
        src = args[0] if args else ()
        self.charge(len(src) + len(kwargs))         # before materialising anything
        flat: list = []
        for pair in (src.items() if isinstance(src, dict) else src):
            key, value = pair
            flat += (key, value)
        for key, value in kwargs.items():
            flat += (key, value)
        d = cls()
        self.setitems(d, flat)
        return d

    def charge_call(self, func: Any, args: tuple, kwargs: dict) -> None:
        first = args[0] if args else None
        if func in (list, tuple, set, frozenset):
            if args:
                self.charge(len(first))
                if func is set or func is frozenset:
                    for item in first:
                        self.walk(item)
        elif func is bytes or func is bytearray:
            if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
                self.charge_bytes(int(first))
            elif isinstance(first, np.ndarray):
                self.charge_bytes(first.nbytes)
            elif first is not None:
                self.charge_bytes(4 * len(first) if isinstance(first, str) else len(first))
        elif func is str:
            if first is not None and type(first) not in _LEAF_TYPES:
                raise pickle.UnpicklingError(f"refused to call str() on a {type(first).__name__}")
            size = len(first) if isinstance(first, (str, bytes, bytearray)) else 32
            self.charge_bytes(4 * size + 8)
        elif func in (int, float, complex, bool):
            for value in list(args) + list(kwargs.values()):
                if type(value) not in _LEAF_TYPES:
                    raise pickle.UnpicklingError(f"refused to call {func.__name__}() on a {type(value).__name__}")
        elif func is _RECONSTRUCT:
            if first is not np.ndarray or len(args) != 3:
                raise pickle.UnpicklingError("refused: _reconstruct of something other than numpy.ndarray")
            self.charge_array(args[1], args[2])
        elif func is np.ndarray:
            self.charge_array(first if args else kwargs.get("shape"),
                              args[1] if len(args) > 1 else kwargs.get("dtype", float))
        elif func is _SCALAR:
            dtype = first if isinstance(first, np.dtype) else None
            if dtype is None:
                raise pickle.UnpicklingError("numpy scalar without a dtype")
            self.charge_bytes(dtype.itemsize)
        elif func is _FROMBUFFER:
            pass                              # a view of bytes already read
        # numpy.dtype and the DType classes build descriptions, not data; their arguments were walked

    def charge_array(self, shape: Any, dtype: Any) -> None:
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        if type(shape) not in (tuple, list) or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise pickle.UnpicklingError(f"bad numpy array shape (a {type(shape).__name__})")
        dtype = np.dtype(dtype)
        count = math.prod(int(d) for d in shape)
        self.charge_bytes(count * max(dtype.itemsize, 1))
        if dtype.hasobject:
            self.charge(count)

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        stack[-1] = self.call(stack[-1], args, None)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self.call(cls, args, None, new=True))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self.call(cls, args, kwargs, new=True))

    def _instantiate(self, klass: Any, args: list) -> None:
        self.append(self.call(klass, tuple(args), None, new=not args and isinstance(klass, type)))

    def load_build(self) -> None:
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        if isinstance(inst, np.ndarray):
            self.check_array_state(state)
            inst.__setstate__(state)
            if inst.dtype.hasobject:
                self.object_arrays[id(inst)] = inst
        elif isinstance(inst, np.dtype):
            # numpy's dtype.__setstate__ trusts its input (a malformed tuple segfaults, and the flags
            # it sets decide whether bytes are read as object pointers): never call it. Rebuild the
            # dtype with numpy's public constructor instead, and accept it only if it reproduces
            # the state exactly.
            self.walk(state)
            new = _dtype_from_state(inst, state)
            if new is not inst:
                stack[-1] = new
                for index, value in list(self.memo.items()):
                    if value is inst:
                        self.memo[index] = new
        else:       # would set attributes, e.g. an 'append' that APPEND would then call
            raise pickle.UnpicklingError(f"cannot set the state of a {type(inst).__name__}")

    def check_array_state(self, state: Any) -> None:
        if type(state) is not tuple or len(state) not in (4, 5):
            raise pickle.UnpicklingError("bad numpy array state")
        shape, dtype, _fortran, raw = state[-4:]
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError("numpy array state without a dtype")
        self.charge_array(shape, dtype)
        if dtype.hasobject:
            count = math.prod(int(d) for d in shape)
            if type(raw) is not list or len(raw) != count:
                raise pickle.UnpicklingError("numpy object array state does not match its shape")
        elif not isinstance(raw, (bytes, bytearray, str)):
            raise pickle.UnpicklingError("numpy array state without its data")


_NPY_ALIGNED_STRUCT = 0x80
_NATIVE = "<" if sys.byteorder == "little" else ">"


def _dtype_from_state(inst: np.dtype, state: Any) -> np.dtype:
    """The dtype a pickle's BUILD describes, made by numpy's constructors; UnpicklingError unless
    it reproduces ``state`` exactly (as numpy's own pickles always do)."""
    try:
        if inst.__reduce__()[2] == state:
            return inst                         # the usual case: the state changes nothing
    except Exception:
        pass
    refused = pickle.UnpicklingError("a numpy dtype state that numpy does not write")
    if type(state) is not tuple or (state[:1], len(state)) not in (((3,), 8), ((4,), 9)):
        raise refused
    _version, endian, subarray, names, fields, elsize, _alignment, flags = state[:8]
    extra = state[8] if len(state) == 9 else None
    if endian not in ("<", ">", "|", "=") or not all(type(v) is int for v in (elsize, flags)):
        raise refused
    try:
        if names is not None:
            if type(names) is not tuple or type(fields) is not dict or not all(
                    type(n) is str and type(fields.get(n)) is tuple and len(fields[n]) in (2, 3) for n in names):
                raise refused
            spec = {"names": list(names), "formats": [fields[n][0] for n in names],
                    "offsets": [fields[n][1] for n in names], "itemsize": elsize}
            if any(len(fields[n]) == 3 for n in names):
                spec["titles"] = [fields[n][2] if len(fields[n]) == 3 else None for n in names]
            new = np.dtype(spec, align=bool(flags & _NPY_ALIGNED_STRUCT))
        elif subarray is not None:
            if type(subarray) is not tuple or len(subarray) != 2 or not isinstance(subarray[0], np.dtype):
                raise refused
            new = np.dtype((subarray[0], subarray[1]))
        else:
            new = inst
        if inst.kind in "mM" and type(extra) is tuple and len(extra) == 2 and type(extra[1]) is tuple:
            unit, count = extra[1][0], extra[1][1]
            if type(unit) is not bytes or type(count) is not int or not 0 < count < 2 ** 31:
                raise refused
            new = np.dtype(f"{inst.kind}8" + ("" if unit == b"generic" else f"[{count}{unit.decode('ascii')}]"))
            extra = extra[0]
        if isinstance(extra, dict):
            new = np.dtype(new, metadata=extra)
        elif extra is not None:
            raise refused
        if endian in "<>" and new.byteorder != "|":
            wanted = "=" if endian == _NATIVE else endian
            if new.byteorder != wanted:
                new = new.newbyteorder(wanted)
        if new.__reduce__()[2] == state:
            return new
    except pickle.UnpicklingError:
        raise
    except Exception as exc:
        raise pickle.UnpicklingError(f"a numpy dtype state that numpy does not write ({exc})") from None
    raise refused


for _code, _name in ((pickle.DICT[0], "load_dict"), (pickle.ADDITEMS[0], "load_additems"),
                     (pickle.FROZENSET[0], "load_frozenset"), (pickle.BYTEARRAY8[0], "load_bytearray8"),
                     (pickle.REDUCE[0], "load_reduce"), (pickle.NEWOBJ[0], "load_newobj"),
                     (pickle.NEWOBJ_EX[0], "load_newobj_ex"), (pickle.BUILD[0], "load_build")):
    _BoundedUnpickler.dispatch[_code] = getattr(_BoundedUnpickler, _name)
# INST and OBJ go through _instantiate (overridden); FRAME is skipped inline


def _release(arrays: Iterable[np.ndarray]) -> None:
    """Empty object arrays before they are freed: numpy frees nested object arrays recursively in C,
    which crashes the interpreter for deep chains (observed at 200k levels)."""
    for arr in list(arrays):
        try:
            if arr.dtype.names:
                for name in arr.dtype.names:
                    arr[name] = None
            else:
                arr[...] = None
        except Exception:
            pass


@dataclass
class _Loaded:
    value: Any
    dups: list[tuple[Any, Any, Any, Any]]   # (dict, key, earlier value, later value), reachable or not


def _bounded_loads(data: bytes, limits: InputLimits) -> _Loaded:
    """Unpickle ``data`` within ``limits``: allow-listed types only, bounded objects, depth and memory.

    The value is walked as a tree afterwards (shared references counted each
    time); object arrays that end up unused, or every one on failure, are
    emptied so freeing them cannot recurse.
    """
    unpickler = _BoundedUnpickler(data, limits)
    value = None
    try:
        value = unpickler.load()
        reachable: dict = {}
        _measure(value, limits.max_objects, limits.max_depth, reachable)
        # values that lost to a later copy are not part of the result; bound them before comparing
        for _target, _key, old, new in unpickler.dups:
            unpickler.walk(old)
            unpickler.walk(new)
    except BaseException:
        _release(unpickler.object_arrays.values())
        raise
    finally:
        unpickler.memo.clear()
        unpickler.stack = unpickler.metastack = []
    _release(a for i, a in unpickler.object_arrays.items() if i not in reachable and a is not value)
    return _Loaded(value, unpickler.dups)


# ---------------------------------------------------------------- reading members

_CHUNK = _MB
_KEEP_CAP = 64 * _MB      # beyond this, count first and keep the bytes on a second pass
_MAX_HEADER = 65536


def _read_exactly(fh: Any, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise EOFError(f"member ended after {len(data)} of {n} bytes")
    return data


def _read_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and header length of a .npy stream, reading only the header."""
    from numpy.lib import format as npformat

    magic = _read_exactly(fh, 8)
    if magic[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy member (bad magic)")
    version = (magic[6], magic[7])
    if version == (1, 0):
        size_bytes = _read_exactly(fh, 2)
        hlen = struct.unpack("<H", size_bytes)[0]
    elif version in ((2, 0), (3, 0)):
        size_bytes = _read_exactly(fh, 4)
        hlen = struct.unpack("<I", size_bytes)[0]
    else:
        raise ValueError(f"unsupported .npy version {version[0]}.{version[1]}")
    if hlen > _MAX_HEADER:
        raise ValueError(f".npy header of {hlen} bytes is too large")
    header = io.BytesIO(size_bytes + _read_exactly(fh, hlen))
    if version == (1, 0):
        shape, fortran, dtype = npformat.read_array_header_1_0(header)
    elif version == (2, 0):
        shape, fortran, dtype = npformat.read_array_header_2_0(header)
    else:                                   # utf-8 header; numpy has no public reader for it
        reader = getattr(npformat, "_read_array_header", None)
        if reader is None:
            from numpy.lib import _format_impl
            reader = _format_impl._read_array_header
        shape, fortran, dtype = reader(header, version)
    return shape, fortran, dtype, 8 + len(size_bytes) + hlen


def _read_rest(zf: zipfile.ZipFile, info: zipfile.ZipInfo, fh: Any, offset: int, limit: int) -> bytes:
    """The rest of the member (from ``offset``), refusing more than ``limit`` bytes in all.

    Reads 1 MiB at a time whatever the header declares. Past 64 MB the bytes
    are only counted, and a member that turns out to be within the limit is
    read again, so refusing a bomb costs ~64 MB of memory, not the limit.
    """
    left = limit - offset
    chunks: list[bytes] | None = []
    total = 0
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > left:
            raise _too_big(limit)
        if chunks is not None:
            if total > _KEEP_CAP:
                chunks = None
            else:
                chunks.append(chunk)
    if chunks is not None:
        return b"".join(chunks)
    with zf.open(info) as again:
        _read_exactly(again, offset)
        data = again.read(total + 1)
    if len(data) != total:
        raise ValueError("member changed while being read")
    return data


def _drain(fh: Any, left: int, limit: int) -> None:
    """Read to the end of the member (so zipfile checks its CRC), refusing more than ``left`` bytes."""
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            return
        left -= len(chunk)
        if left < 0:
            raise _too_big(limit)


def _read_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: InputLimits) -> tuple[Any, _Loaded | None]:
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Refused(f"compressed with zip method {info.compress_type}; only stored and deflate members "
                       "(what numpy writes) are read")
    limit = limits.max_member_bytes
    with zf.open(info) as fh:
        shape, fortran, dtype, offset = _read_header(fh)
        if dtype.hasobject:
            # numpy writes object arrays as one pickle after the header
            loaded = _bounded_loads(_read_rest(zf, info, fh, offset, limit), limits)
            return loaded.value, loaded
        count = math.prod(shape)
        nbytes = count * max(dtype.itemsize, 1)
        if offset + nbytes > limit:
            raise _Refused(f"its header declares a {'x'.join(map(str, shape)) or 'scalar'} {dtype} array of "
                           f"{nbytes / _MB:.1f} MB, more than {limit / _MB:g} MB{_hint('max_member_mb')}")
        data = _read_exactly(fh, count * dtype.itemsize)
        _drain(fh, limit - offset - nbytes, limit)
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C"), None


# ---------------------------------------------------------------- duplicates

def _examples(names: Sequence[Any], k: int = 3) -> str:
    shown = []
    for name in names[:k]:
        text = str(name)
        shown.append(repr(text if len(text) <= 40 else text[:40] + "..."))
    return ", ".join(shown) + (", ..." if len(names) > k else "")


def _judge_duplicates(where: str, what: str, groups: dict[Any, list[tuple[Any, Any]]],
                      notes: list[str] | None, about: str) -> None:
    """``groups``: name -> [(earlier, later) value pairs]. Equal everywhere -> a note; else UserError."""
    if not groups:
        return
    differ = [name for name, pairs in groups.items() if not all(_same(a, b) for a, b in pairs)]
    if differ:
        raise UserError(f"{where}: {what}: {len(differ)} {about} appear more than once with different "
                        f"values (e.g. {_examples(differ)}); remove the duplicates")
    if notes is not None:
        notes.append(f"{len(groups)} {about} appear more than once with the same value in {where} {what} "
                     f"(e.g. {_examples(list(groups))}); counted once")


def _pickle_duplicates(path: Path, key: str, loaded: _Loaded, top: Any, notes: list[str] | None) -> None:
    samples: dict[Any, list] = {}
    nested: dict[Any, list] = {}
    for target, name, old, new in loaded.dups:
        (samples if target is top else nested).setdefault(name, []).append((old, new))
    what = f"key '{key}'"
    _judge_duplicates(str(path), what, samples, notes, "sample name(s)")
    _judge_duplicates(str(path), what, nested, notes, "key(s) of nested dicts")


def check_unique_names(path: str | Path, names: Sequence[Any], values: Sequence[Any], what: str,
                       notes: list[str] | None = None) -> int:
    """Refuse repeated names in parallel arrays (e.g. an extraction file's 'filenames'/'fileitems').

    Names are compared as ``str``. A name repeated with equal values is
    counted once: a note is appended to ``notes``. Repeated with different
    values: UserError "<path>: <what>: N sample name(s) appear more than once
    with different values (e.g. 'a', 'b'); remove the duplicates". ``what``
    says where, e.g. "key 'filenames'". Returns how many names were repeated.
    """
    keys = [str(name) for name in names]
    if len(set(keys)) == len(keys):
        return 0
    if len(values) != len(keys):
        raise UserError(f"{path}: {what} has {len(keys)} names but {len(values)} values")
    first: dict[str, int] = {}
    groups: dict[str, list[tuple[Any, Any]]] = {}
    for i, key in enumerate(keys):
        j = first.setdefault(key, i)
        if j != i:
            groups.setdefault(key, []).append((values[j], values[i]))
    _judge_duplicates(str(path), what, groups, notes, "sample name(s)")
    return len(groups)


# ---------------------------------------------------------------- the entry point

def load_npz(path: str | Path, keys: list[str] | None = None, *, notes: list[str] | None = None,
             limits: InputLimits | None = None) -> dict[str, Any]:
    """Read the named arrays of an .npz file (all when ``keys`` is None).

    Object arrays come back as whatever the restricted pickle holds (a 0-d
    object array holding a dict comes back as that dict via ``.item()``).
    Every failure is one UserError line naming the file and key: unsafe
    pickles, corrupt or truncated data, limits exceeded (``limits``, default
    :func:`get_limits`), dict keys stored twice with different values. Keys
    stored twice with the same value are kept once and described in a line
    appended to ``notes`` (when given).
    """
    path = Path(path)
    limits = limits or get_limits()
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None
    out: dict[str, Any] = {}
    with zf:
        infos: dict[str, list[zipfile.ZipInfo]] = {}
        bare = set()
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                infos.setdefault(info.filename[:-4], []).append(info)
            else:
                bare.add(info.filename)
        wanted = list(infos) if keys is None else keys
        for key in wanted:  # numpy's loader would read the member without '.npy': never score another one
            if key in bare:
                raise UserError(f"{path}: holds both '{key}' and '{key}.npy'; numpy reads the first, so the "
                                "file is ambiguous: remove one")
        for key in wanted:
            if key not in infos:
                raise UserError(f"{path}: key '{key}' not found (keys: {', '.join(sorted(infos)) or 'none'})")
            if len(infos[key]) > 1:
                raise UserError(f"{path}: key '{key}' is stored {len(infos[key])} times in the archive; "
                                "remove the duplicates")
            try:
                value, loaded = _read_array(zf, infos[key][0], limits)
            except _Refused as exc:
                raise UserError(f"{path}: key '{key}': {exc.message}") from None
            except pickle.UnpicklingError as exc:
                raise UserError(f"{path}: key '{key}': unsafe or corrupt pickle ({exc}); "
                                "only dicts, lists, strings, numbers and numpy arrays are accepted") from None
            except (MemoryError, RecursionError) as exc:
                raise UserError(f"{path}: key '{key}': too large or too deeply nested to load "
                                f"({type(exc).__name__} within the input limits {limits.as_text()}; "
                                f"lower them with --input-limits or {ENV_VAR})") from None
            except (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error, struct.error,
                    NotImplementedError, RuntimeError, SyntaxError) as exc:
                raise UserError(f"{path}: key '{key}': truncated or corrupt ({exc})") from None
            if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
                value = value.item()
            if loaded is not None and loaded.dups:
                _pickle_duplicates(path, key, loaded, value, notes)
            out[key] = value
    return out


def zlib_error() -> type[Exception]:
    return zlib.error
