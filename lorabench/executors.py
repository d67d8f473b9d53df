"""Executors: where the grid's jobs run — in this process, or as Ray tasks on a cluster.

An executor only runs a function over items and says when each one starts and ends; the grid
(`lorabench.grid`) owns everything else (skipping, the upstream phase, writing results, the report), so both executors run the
very same cell function and produce the same report. Ray is an optional extra, imported only when
the Ray executor is used.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from lorabench.errors import ConfigError, LorabenchError

Event = tuple[Literal["start", "end"], int, "Outcome | None"]
# Environment variables a worker needs to see what the driver sees (task folders, data, cache, hub).
FORWARDED_ENV_PREFIXES = ("LORABENCH_", "HF_")


@dataclass
class Outcome:
    """What one job gave: its return value, or why it failed (a message; a traceback for bugs)."""

    value: Any = None
    error: str | None = None


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, LorabenchError):  # a user error: its message says it all
        return str(exc)
    return f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc)).rstrip()


def run_job(fn: Callable[[Any], Any], item: Any) -> Outcome:
    """Run one job; any exception becomes a failed outcome, so one bad cell never stops the others."""
    try:
        return Outcome(value=fn(item))
    except Exception as exc:
        return Outcome(error=describe_error(exc))


class Executor(Protocol):
    name: str

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Event]:
        """Yield ("start", i, None) when item i starts and ("end", i, outcome) when it ends."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """In-process, one job after the other (the default)."""

    name = "local"

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Event]:
        for i, item in enumerate(items):
            yield "start", i, None
            yield "end", i, run_job(fn, item)

    def close(self) -> None:
        pass


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a wrong host:port: Ray itself retries an unreachable head for minutes."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except ValueError:
        raise ConfigError(f"--ray-address takes 'auto', HOST:PORT or ray://HOST:PORT; got {address!r}.") from None
    except OSError as exc:
        raise ConfigError(f"No Ray head answers at --ray-address {address!r} ({exc}). Start one with "
                          "`ray start --head`, check the host and port, or leave --ray-address out to start a "
                          "local instance.") from None


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray, which is not installed. Install it with "
                          "`pip install 'lorabench[ray]'` (or `pip install 'ray>=2.30'`), or use --executor local.") from None
    return ray


@dataclass
class RayExecutor:
    """One Ray task per job, at most as many in flight as the cluster has room for.

    `address`: None starts a local Ray instance (no dashboard); "auto", "host:port" or
    "ray://host:port" joins a running cluster. Jobs in flight are exactly the ones the cluster can run now, so the driver's
    "running" count is true; a worker that dies fails only its own job (`max_retries` re-runs it).
    """

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    num_cpus: int | None = None  # size of a local instance (default: all cores)
    max_retries: int = 0
    name: str = "ray"
    _started: bool = field(default=False, init=False, repr=False)  # True if this executor started Ray

    def __post_init__(self) -> None:
        if self.cpus_per_run < 0 or self.gpus_per_run < 0:
            raise ConfigError(f"--cpus-per-run and --gpus-per-run must be >= 0; got {self.cpus_per_run} and "
                              f"{self.gpus_per_run}.")
        import_ray()  # say how to install it now, not after the cells were collected

    def connect(self):
        """Join (or start) Ray once; a Ray already initialised in this process is reused as it is."""
        ray = import_ray()
        if ray.is_initialized():
            return ray
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
        kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "logging_level": logging.WARNING}
        if self.address:
            check_reachable(self.address)
            kwargs["address"] = self.address
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage report for a private instance
            kwargs.update(num_cpus=self.num_cpus, include_dashboard=False)
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            raise ConfigError(f"Could not join the Ray cluster at --ray-address {self.address!r}: {exc}. If the cluster "
                              "uses token authentication, set RAY_AUTH_MODE=token here (the token is read from "
                              "~/.ray/auth_token or RAY_AUTH_TOKEN); or leave --ray-address out to start a local "
                              "instance.") from None
        self._started = True
        return ray

    def slots(self, ray) -> int:
        res = ray.cluster_resources()
        n = int(res.get("CPU", 0) // self.cpus_per_run) if self.cpus_per_run > 0 else 1 << 30
        if self.gpus_per_run > 0:
            n = min(n, int(res.get("GPU", 0) // self.gpus_per_run))
        return max(1, n)

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Event]:
        if not items:  # e.g. every cell finished already: no need to start Ray
            return
        ray = self.connect()
        remote = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
                            max_retries=self.max_retries)(run_job)
        todo = deque(enumerate(items))
        pending: dict[Any, int] = {}
        try:
            while todo or pending:
                room = self.slots(ray) if todo else 0
                while todo and len(pending) < room:
                    i, item = todo.popleft()
                    pending[remote.remote(fn, item)] = i
                    yield "start", i, None
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    yield "end", pending.pop(ref), self._get(ray, ref)
        finally:  # interrupted (Ctrl-C, an error in the caller): do not leave tasks running
            for ref in pending:
                ray.cancel(ref, force=True)

    @staticmethod
    def _get(ray, ref) -> Outcome:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:  # the worker died, its node was lost, or it could not start
            return Outcome(error=f"Ray lost this job ({type(exc).__name__}); finished cells are kept, re-run to "
                                 f"complete it. {str(exc).strip()}")

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def make_executor(kind: str = "local", *, address: str | None = None, cpus_per_run: float = 1.0,
                  gpus_per_run: float = 0.0, **kw: Any) -> Executor:
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, **kw)
    raise ConfigError(f"Unknown executor {kind!r}; executors: local, ray.")
