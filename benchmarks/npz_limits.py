#!/usr/bin/env python3
"""What the bounded .npz loader costs, on every real .npz under a folder.

    python3 benchmarks/npz_limits.py [FOLDER] [--repeat 5]

FOLDER defaults to $UNIBENCH_SHARED/data, else ../shared/data beside the repo.
Each file is read whole (every key), best of --repeat, three ways:

* numpy   -- ``numpy.load(path, allow_pickle=True)``: trusting, unbounded;
* before  -- the loader this repo had before the limits (C unpickler with an
             allow-list, whole members read at once), reproduced here;
* now     -- ``unibench.safe_npz.load_npz``: allow-list, pure-Python bounded
             unpickler, chunked bounded reads, tree walk, duplicate checks.

Results are compared with numpy's (they must be identical), and grouped by
kind: label files, answer files (``name2reason``), extraction files
(``filenames``/``fileitems``). The headroom lines show how far the real files
sit below the default limits.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
import sys
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from unibench import safe_npz  # noqa: E402


# ---------------------------------------------------------------- the loader before issue 8, for comparison

class _BeforeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in safe_npz._ALLOWED or (module == "numpy" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def before_load_npz(path: Path) -> dict:
    from numpy.lib import format as npformat

    out = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            if not member.endswith(".npy"):
                continue
            with zf.open(member) as fh:
                version = npformat.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = npformat.read_array_header_1_0(fh)
                else:
                    shape, fortran, dtype = npformat.read_array_header_2_0(fh)
                if dtype.hasobject:
                    value = _BeforeUnpickler(io.BytesIO(fh.read())).load()
                else:
                    count = int(np.prod(shape)) if shape else 1
                    value = np.frombuffer(fh.read(), dtype=dtype, count=count).reshape(
                        shape, order="F" if fortran else "C")
            if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
                value = value.item()
            out[member[:-4]] = value
    return out


def numpy_load(path: Path) -> dict:
    with np.load(path, allow_pickle=True) as z:
        out = {k: z[k] for k in z.files}
    return {k: (v.item() if v.dtype == object and v.shape == () else v) for k, v in out.items()}


def now_load(path: Path) -> dict:
    return safe_npz.load_npz(path)


# ---------------------------------------------------------------- measuring

def best_of(fn, path: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(path)
        best = min(best, time.perf_counter() - start)
    return best


def same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and a.tolist() == b.tolist())
    return type(a) is type(b) and a == b


def kind_of(path: Path, keys: list[str]) -> str:
    if "name2reason" in keys:
        return "answer"
    if "filenames" in keys:
        return "extraction"
    if path.name.startswith("label"):
        return "label"
    return "other"


def main() -> int:
    default = Path(os.environ.get("UNIBENCH_SHARED", REPO.parent / "shared")) / "data"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", type=Path, default=default,
                   help=f"folder searched for *.npz (default: {default})")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions per file and loader (best kept)")
    args = p.parse_args()
    files = sorted(args.folder.rglob("*.npz"))
    if not files:
        print(f"error: no .npz files under {args.folder}", file=sys.stderr)
        return 2

    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    worst: list[tuple[float, str]] = []
    max_member = max_objects = max_depth = 0
    mismatches = 0
    limits = safe_npz.get_limits()
    for path in files:
        ref = numpy_load(path)
        ours = now_load(path)
        if sorted(ref) != sorted(ours) or not all(same(ref[k], ours[k]) for k in ref):
            mismatches += 1
            print(f"MISMATCH {path}")
        with zipfile.ZipFile(path) as zf:
            max_member = max([max_member] + [i.file_size for i in zf.infolist()])
        for value in ours.values():
            objects, depth = safe_npz._measure(value, 10 ** 12, 10 ** 6)
            max_objects, max_depth = max(max_objects, objects), max(max_depth, depth)
        times = [best_of(fn, path, args.repeat) for fn in (numpy_load, before_load_npz, now_load)]
        row = totals[kind_of(path, list(ours))]
        row[0] += 1
        for i, t in enumerate(times):
            row[i + 1] += t
        worst.append((times[2] - times[1], str(path.relative_to(args.folder))))

    print(f"{len(files)} .npz files under {args.folder}; best of {args.repeat}; Python {sys.version.split()[0]}, "
          f"numpy {np.__version__}, {os.cpu_count()} CPUs")
    print(f"{'kind':<11} {'files':>5} {'numpy.load':>11} {'before':>9} {'now':>9} {'now-before':>11} {'now/numpy':>10}")
    grand = [0, 0.0, 0.0, 0.0]
    for kind in sorted(totals):
        n, t_np, t_before, t_now = totals[kind]
        grand = [grand[0] + n, grand[1] + t_np, grand[2] + t_before, grand[3] + t_now]
        print(f"{kind:<11} {n:>5} {t_np * 1e3:>9.1f}ms {t_before * 1e3:>7.1f}ms {t_now * 1e3:>7.1f}ms "
              f"{(t_now - t_before) * 1e3:>+9.1f}ms {t_now / t_np:>9.2f}x")
    n, t_np, t_before, t_now = grand
    print(f"{'all':<11} {n:>5} {t_np * 1e3:>9.1f}ms {t_before * 1e3:>7.1f}ms {t_now * 1e3:>7.1f}ms "
          f"{(t_now - t_before) * 1e3:>+9.1f}ms {t_now / t_np:>9.2f}x")
    print("largest added cost (now - before):")
    for extra, name in sorted(worst, reverse=True)[:3]:
        print(f"  {extra * 1e3:+6.2f} ms  {name}")
    print(f"headroom under the limits in force ({limits.as_text()}):")
    print(f"  largest member {max_member / 2 ** 20:.2f} MB decompressed "
          f"({limits.max_member_mb / (max_member / 2 ** 20):.0f}x below max_member_mb)")
    print(f"  most objects in one value {max_objects} ({limits.max_objects / max_objects:.0f}x below max_objects)")
    print(f"  deepest nesting {max_depth} ({limits.max_depth / max_depth:.0f}x below max_depth)")
    print("results identical to numpy.load: " + ("yes" if not mismatches else f"NO ({mismatches} files differ)"))
    replay_reads(args.folder, args.repeat)
    return 1 if mismatches else 0


def replay_reads(folder: Path, repeat: int) -> None:
    """The .npz reads of one replay run of MER2023 + CMU-MOSI (benchmarks/replay_speed.py): each label
    file's test split, every answer file's name2reason, every extraction file's filenames/fileitems."""
    sample = next((p for p in (folder, folder / "mer-unibench-sample") if (p / "dataset").is_dir()), None)
    if sample is None:
        return
    reads = [(sample / "dataset/mer2023-dataset-process/label-6way.npz", ["test1_corpus"]),
             (sample / "dataset/cmumosi-process/label.npz", ["test_corpus"])]
    for path in sorted((sample / "outputs").rglob("*.npz")):
        reads.append((path, ["filenames", "fileitems"] if "-openset" in path.name else ["name2reason"]))
    reads = [(p, k) for p, k in reads if p.is_file()]

    def before(path: Path, keys: list[str]) -> None:      # the old loader read whole files; read only the keys
        with zipfile.ZipFile(path) as zf:
            for key in keys:
                with zf.open(key + ".npy") as fh:
                    from numpy.lib import format as npformat
                    npformat.read_magic(fh)
                    _shape, _fortran, dtype = npformat.read_array_header_1_0(fh)
                    data = fh.read()
                    if dtype.hasobject:
                        _BeforeUnpickler(io.BytesIO(data)).load()

    t_before = t_now = 0.0
    for path, keys in reads:
        t_before += best_of(lambda p: before(p, keys), path, repeat)
        t_now += best_of(lambda p: safe_npz.load_npz(p, keys), path, repeat)
    print(f"one replay run's reads ({len(reads)} members from {sample.name}): before {t_before * 1e3:.1f} ms, "
          f"now {t_now * 1e3:.1f} ms ({(t_now - t_before) * 1e3:+.1f} ms per run)")


if __name__ == "__main__":
    sys.exit(main())
