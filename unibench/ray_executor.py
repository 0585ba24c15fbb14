"""`--executor ray`: a model's samples (and an LLM extractor's prompts) answered by a pool of Ray actors.

Ray is an optional extra (``pip install 'mer-unibench[ray]'``); nothing imports it unless ``--executor ray``
is asked for. The driver (this process) stays the only writer of the answer log and of the extraction cache:
actors only answer and hand results back.

This module holds the connection (:class:`RayOptions`, :func:`connect`) and the inference pool
(:class:`RayExecutor`); :mod:`unibench.ray_extraction` the extraction pool.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unibench.errors import MissingExtraError, UserError


@dataclass
class RayOptions:
    """``--ray-args k=v,...``: the pool and each worker's resources."""

    num_workers: int = 0        # actors in a pool; 0: one per GPU when num_gpus > 0, else one per free CPU
    num_gpus: float = 0.0       # GPUs per actor (a model per GPU: 1)
    num_cpus: float = 1.0       # CPUs per actor
    max_retries: int = 2        # times a batch is resubmitted after its actor died, then its samples fail


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("ray", "ray", "--executor ray") from None
    return ray


def parse_ray_args(text: str | None) -> RayOptions:
    from unibench.modelargs import build_options

    options = build_options(RayOptions, text, "--ray-args", owner="--executor ray")
    if options.num_workers < 0 or options.num_gpus < 0 or options.num_cpus < 0 or options.max_retries < 0:
        raise UserError("--ray-args: num_workers, num_gpus, num_cpus and max_retries must be 0 or more")
    return options


def connect(address: str | None, options: RayOptions) -> Any:
    """Start a local Ray instance (``address`` None) or join a cluster (``auto`` or ``ray://host:port``);
    return the ``ray`` module. Already connected (e.g. a test's instance): kept as it is."""
    ray = require_ray()
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise UserError(f"--executor ray: cannot start or join {where} ({str(exc).splitlines()[0][:200]}); "
                            "check --ray-address (auto joins a cluster started with 'ray start --head')") from None
    return ray
