"""The adapter interface: how a model is asked.

An adapter gets typed :class:`Sample` objects (never tuples or a handle into
the dataset) and returns free-text answers. It declares which inputs it uses
and an ``Options`` dataclass that ``--model-args k=v,...`` fills with type
checks. Adapters register by name; outside packages add theirs through the
``unibench.adapters`` entry-point group.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union

from unibench.errors import UserError, log

if TYPE_CHECKING:  # pragma: no cover
    from unibench.taskdata import TaskData

INPUT_KINDS = ("video", "face", "audio", "subtitle")


@dataclass(frozen=True)
class Sample:
    """One question to a model."""

    name: str
    task: str
    question: str
    subtitle: str = ""
    video: Path | None = None
    audio: Path | None = None
    face: Path | None = None


@dataclass(frozen=True)
class ExtractionFailure:
    """One sample whose extraction gave no usable answer: prompt A ('ov', scored as an empty prediction) or
    prompt B ('sentiment', scored as unparsed)."""

    prompt: Literal["ov", "sentiment"]
    name: str

    def __str__(self) -> str:  # how results files list it
        return f"{self.prompt}:{self.name}"


@dataclass
class AnswerSet:
    """The answers of one model run (one answer file) for one task.

    ``ov_labels`` holds prompt A's raw answers (a label-list string per
    sample) and ``sentiments`` prompt B's, when they exist already (the
    authors' ``-openset.npz`` files, or an earlier extraction).
    """

    label: str
    answers: dict[str, str]
    source: str
    ov_labels: dict[str, str] | None = None
    sentiments: dict[str, str] | None = None
    extraction_source: str = ""
    ov_source: str = ""
    sentiment_source: str = ""
    warnings: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # e.g. failed-samples:N, partial:N/M (leaderboard)
    extraction_failures: list[ExtractionFailure] = field(default_factory=list)
    order: int = 0  # position among the task's answer files (for --select last)
    # name -> why its answer is unusable (not text: a number, list, dict, bytes, null): a failed sample, flagged
    rejected: dict[str, str] = field(default_factory=dict)
    # flags that come with the extraction files read beside the answers (e.g. an earlier extractor:lexicon)
    extraction_flags: list[str] = field(default_factory=list)

    def drop_extractions(self) -> None:
        """Forget extraction files read beside the answers (``--force-extract``: the extractor redoes them)."""
        self.ov_labels = self.sentiments = None
        self.ov_source = self.sentiment_source = ""
        self.extraction_flags = []
        self.extraction_failures = []


@dataclass(frozen=True)
class AnswerRun:
    """One of several answer files a model writes per task (e.g. one per released checkpoint).

    Its answers go to ``results-<task>/<folder>/<label>.npz`` (the original
    layout), and ``identity`` (what makes them differ, e.g. the checkpoint's
    hash) enters the resume key.
    """

    label: str
    folder: str
    identity: str


Answer = Union[str, BaseException]  # what answer() gives per sample


@dataclass
class NoOptions:
    pass


class Adapter:
    """Base class. Subclasses set ``name``, ``inputs``, ``Options`` and implement ``answer``.

    A replaying adapter implements ``answer_sets`` instead and returns the
    answers that already exist for a task.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    generates: ClassVar[bool] = True  # False for adapters that only replay existing answers
    # Options naming a local model folder: the resume key holds the folder's content fingerprint, not its path.
    model_ref_keys: ClassVar[tuple[str, ...]] = ("path", "model")
    # task id -> subtitle column, where this model was run on another column than the task's default
    subtitle_columns: ClassVar[dict[str, str]] = {}
    # Options that never change an answer (beside the run-wide ones): kept out of the resume key.
    resume_ignore: ClassVar[tuple[str, ...]] = ()
    # Samples per answer() call when --batch-size is not given (an instance may set it from its options).
    default_batch_size: int = 1

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    # identity ------------------------------------------------------------
    def model_id(self) -> str:
        """The model's name in results and the leaderboard."""
        return getattr(self.options, "name", None) or self.name

    def describe(self) -> dict[str, Any]:
        """What produced the answers: adapter name and its arguments."""
        opts = dataclasses.asdict(self.options) if dataclasses.is_dataclass(self.options) else {}
        return {"adapter": self.name, "args": {k: str(v) for k, v in opts.items()}}

    @classmethod
    def status(cls) -> str:
        """'ready', or why it cannot run here (missing package, ...)."""
        return "ready"

    # answering -----------------------------------------------------------
    def answer_sets(self, task: "TaskData") -> list[AnswerSet] | None:
        """Existing answers for a task (replay); None means 'run inference'."""
        return None

    def answer_runs(self) -> list[AnswerRun]:
        """Several answer files per task (each its own inference pass); [] means one, named after the model."""
        return []

    def use_run(self, run: AnswerRun) -> None:
        """Answer the next samples as ``run`` (called before its samples; load lazily)."""

    def answer(self, samples: list[Sample]) -> list[Answer]:
        """One item per sample, in order: the answer text, or an exception instance when only that sample
        failed (counted, retried on the next run). Raise ``UserError`` for a problem that stops the run;
        any other exception fails the whole batch, whose samples are then retried one by one."""
        raise NotImplementedError(f"adapter '{self.name}' does not generate answers")


ADAPTERS: dict[str, type[Adapter]] = {}
_ENTRY_POINTS_LOADED = False


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make an adapter available by its ``name`` (a built-in's comes from the catalog)."""
    from unibench.adapters import catalog

    builtin = catalog.name_of(cls)
    if builtin is not None:
        cls.name = builtin
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    ADAPTERS[cls.name] = cls
    return cls


def _load_plugins() -> None:
    """Adapters of other packages, from the ``unibench.adapters`` entry-point group."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="unibench.adapters"):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not break the harness
            log(f"warning: adapter plug-in '{ep.name}' failed to load: {exc}")
            continue
        if isinstance(obj, type) and issubclass(obj, Adapter) and obj.name not in ADAPTERS:
            ADAPTERS[obj.name] = obj


def available_adapters() -> dict[str, type[Adapter]]:
    from unibench.adapters import catalog

    catalog.load_all()
    _load_plugins()
    return dict(ADAPTERS)


def get_adapter(name: str) -> type[Adapter]:
    from unibench.adapters import catalog

    if name not in ADAPTERS and not catalog.load(name):
        _load_plugins()
    if name not in ADAPTERS:
        known = sorted(available_adapters())
        raise UserError(f"unknown model '{name}' (known: {', '.join(known)}; see --list-models)")
    return ADAPTERS[name]


def make_adapter(name: str, args: str | None) -> Adapter:
    from unibench.modelargs import build_options

    cls = get_adapter(name)
    options = build_options(cls.Options, args, "--model-args", owner=f"model '{name}'")
    return cls(options)
