"""Imports flow one way: leaf utilities <- tasks / adapters / metrics <- orchestration.

* leaf modules (``unibench/<leaf>.py``) import only other leaf modules;
* ``tasks/``, ``adapters/`` and ``metrics/`` import leaf modules and their own
  folder, never each other and never the orchestration;
* the orchestration (CLI, runner, inference, extraction stage, results,
  demo) is the only code that imports all three.

The test reads the source (``ast``), so a forbidden import fails it even when
it sits inside a function or under ``TYPE_CHECKING``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LEAF = {"errors", "strict", "safe_npz", "media", "modelargs", "fileio", "answerfiles", "taskdata", "prompts",
        "labels", "runtime", "openai_http", "vllm_errors"}
ORCHESTRATION = {"cli", "runner", "inference", "extract", "results", "demo", "reports", "compare", "robustness",
                 "closedset", "plots", "html", "ray_executor", "ray_extraction", "shards"}
FOLDERS = {"adapters", "metrics", "tasks"}


def unibench_imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "unibench":
            if node.module == "unibench":  # from unibench import x
                out.extend((node.lineno, f"unibench.{a.name}") for a in node.names)
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "unibench")
    return out


def layer_of(module: str) -> str:
    """'unibench.metrics.llm' -> 'metrics'; 'unibench.fileio' -> 'leaf'; 'unibench.runner' -> 'orchestration'."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] == "__init__":
        return "package"
    if parts[1] in FOLDERS:
        return parts[1]
    if parts[1] in LEAF:
        return "leaf"
    return "orchestration"


def sources() -> list[tuple[str, Path]]:
    out = [(folder, p) for folder in FOLDERS for p in sorted((REPO / folder).rglob("*.py"))]
    out += [("leaf", REPO / "unibench" / f"{name}.py") for name in sorted(LEAF)]
    return out


def test_every_leaf_module_exists_and_every_unibench_module_has_a_layer():
    assert all((REPO / "unibench" / f"{name}.py").is_file() for name in LEAF)
    unplaced = [p.stem for p in (REPO / "unibench").glob("*.py")
                if p.stem not in LEAF | ORCHESTRATION | {"__init__", "__main__"}]
    assert not unplaced, f"unibench/{unplaced[0]}.py is neither a leaf nor orchestration: add it to one list"


@pytest.mark.parametrize("layer,path", sources(), ids=lambda v: str(v.relative_to(REPO)) if isinstance(v, Path) else v)
def test_imports_flow_one_way(layer, path):
    allowed = {"leaf"} if layer == "leaf" else {"leaf", layer}
    bad = [f"{path.relative_to(REPO)}:{line} imports {module} ({layer_of(module)})"
           for line, module in unibench_imports(path)
           if layer_of(module) not in allowed | {"package"}]
    assert not bad, "\n".join(bad)


def test_the_rule_catches_a_forbidden_import(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    from unibench.adapters.replay import read_extraction_npz\n")
    assert [layer_of(m) for _, m in unibench_imports(sample)] == ["adapters"]


def test_a_builtin_adapter_is_named_in_one_place():
    """The catalog names every built-in adapter; the class gets its name from there (never a second copy)."""
    from unibench.adapters import catalog
    from unibench.adapters.base import get_adapter

    for name, entry in catalog.BUILTIN.items():
        module, cls_name = entry.split(":")
        cls = get_adapter(name)
        assert (cls.__module__, cls.__qualname__, cls.name) == (f"unibench.adapters.{module}", cls_name, name)
        source = (REPO / "adapters" / f"{module}.py").read_text(encoding="utf-8")
        assert f'name = "{name}"' not in source, f"adapters/{module}.py names '{name}' a second time"
