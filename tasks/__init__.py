"""Tasks: what is asked and what is true. See :mod:`unibench.tasks.base`."""
from unibench.tasks.base import TASKS, TaskData, TaskSpec, get_task, load_task, register_task, resolve_tasks

from unibench.tasks import catalog as _catalog  # noqa: F401  registers the nine tasks

__all__ = ["TASKS", "TaskData", "TaskSpec", "get_task", "load_task", "register_task", "resolve_tasks"]
