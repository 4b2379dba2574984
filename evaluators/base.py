"""The evaluator contract: what "measure these architectures" means to the rest of the project.

Everything downstream (the store, the ranker's labels, the searches) only ever sees
:class:`EvalRecord` objects, so a benchmark table, a training run and a remote cluster look the
same. Two rules make long campaigns safe:

* One architecture's failure is a *record* (``status="failed"`` with a reason), never an
  exception: a 5,000-architecture job must not die on architecture 4,321, and the reason must be
  stored so nobody silently trains on a zero.
* A record is identified by ``(space, key, fingerprint, seed)``. The fingerprint hashes the
  evaluator's name, its results-changing settings and a class version, so changing any of them
  starts a fresh set of records instead of mixing incompatible numbers.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import sys
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from search_spaces.errors import AutoBuildError, ConfigError, EncodingError, UnknownNameError

STATUS_OK = "ok"
STATUS_FAILED = "failed"
_STATUSES = (STATUS_OK, STATUS_FAILED)


class TransientEvaluationError(Exception):
    """Raised inside an evaluator for failures worth retrying (CUDA OOM, a lost worker, a busy
    device). Anything else raised is taken as a property of the architecture and not retried."""


class EvaluationError(AutoBuildError):
    """A whole evaluation job went wrong (e.g. more failures than the caller tolerates).

    ``outcome`` holds what was evaluated before giving up; every record in it is already stored.
    """

    def __init__(self, message: str, outcome: Any = None):
        super().__init__(message)
        self.outcome = outcome


@dataclass
class EvalRecord:
    """One measurement of one architecture.

    ``arch`` is the space's native encoding (JSON-able) so a record stays readable without this
    code; ``key`` is what the record is looked up by (normally ``space.key(arch)``).
    ``transient`` marks a failure that may succeed if retried; such records are placeholders that a
    later successful evaluation may replace (see :mod:`.store`).
    """

    space: str
    key: str
    arch: Any
    fingerprint: str
    seed: int = 0
    status: str = STATUS_OK
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    attempts: int = 1
    transient: bool = False

    def __post_init__(self):
        if self.status not in _STATUSES:
            raise ValueError(f"EvalRecord.status must be one of {_STATUSES}, not {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "EvalRecord":
        return EvalRecord(
            space=d["space"], key=d["key"], arch=d["arch"], fingerprint=d["fingerprint"], seed=int(d.get("seed", 0)),
            status=d.get("status", STATUS_OK), metrics=dict(d.get("metrics") or {}), error=d.get("error"),
            seconds=float(d.get("seconds") or 0.0), attempts=int(d.get("attempts") or 1), transient=bool(d.get("transient", False)),
        )


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces): the form that is hashed and compared."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def exact_key(space, arch) -> str:
    """The key of the encoding itself, ignoring any isomorphism the space knows about."""
    return canonical_json(space.format(arch))


def to_arch(space, obj):
    """Accept an ``Arch`` or any native encoding the space parses, so callers can pass either.

    ``search_spaces.base`` is looked up, not imported: it pulls in torch (seconds per worker
    process), and if it was never imported no ``Arch`` can exist to be recognised.
    """
    base = sys.modules.get("search_spaces.base")
    if base is not None and isinstance(obj, base.Arch):
        return obj
    return space.parse(obj)


def check_metrics(metrics: Any) -> tuple[dict[str, float], str | None]:
    """Coerce metric values to float; a missing, non-numeric or non-finite value is a failure
    reason rather than a number, because NaN labels poison the ranker without any error."""
    if not isinstance(metrics, dict):
        return {}, f"evaluator returned {type(metrics).__name__} instead of a dict of metrics"
    if not metrics:
        return {}, "evaluator returned no metrics"
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool):
            return {}, f"metric {name!r} is a bool ({value}); metrics must be numbers"
        try:
            v = float(value)
        except (TypeError, ValueError):
            return {}, f"metric {name!r} is not a number: {value!r}"
        if not math.isfinite(v):
            return {}, f"metric {name!r} is {v} (not finite); the architecture is treated as failed"
        out[str(name)] = v
    return out, None


_UNIT_HINTS = (
    (("acc", "top1", "top5", "miou", "map"), "%"),
    (("latency", "_ms", "time"), "ms"),
    (("params", "n_params"), "count"),
    (("flops", "macs", "bops"), "count"),
)


def guess_unit(metric: str) -> str:
    """A best-effort unit for tables that do not declare one (documented, overridable)."""
    m = metric.lower()
    for needles, unit in _UNIT_HINTS:
        if any(n in m for n in needles):
            return unit
    return ""


class Evaluator(ABC):
    """Turns architectures into :class:`EvalRecord` objects.

    Subclasses implement either :meth:`evaluate_one` (simple, one architecture at a time) or
    override :meth:`evaluate` (when a batch is cheaper together, e.g. on a GPU); in the latter case
    build records with :meth:`make_record` / :meth:`failed_record` so the contract holds.
    """

    name: str = ""
    version: str = "1"
    metric_units: dict[str, str] = {}
    #: results do not depend on the seed (tables); noise reports then measure nothing but bugs
    deterministic: bool = False
    #: how many architectures :func:`evaluate_archs` hands over per call
    batch_size: int = 8

    @abstractmethod
    def settings(self) -> dict:
        """Every setting that changes results (JSON-able). Paths and verbosity do not belong here:
        moving a file must not invalidate a store; a different file content must."""

    def fingerprint(self) -> str:
        payload = canonical_json({"name": self.name, "version": str(self.version), "settings": self.settings()})
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def record_key(self, space, arch) -> str:
        """What records are stored under; isomorphic architectures share one by default."""
        return space.key(arch)

    def evaluate_one(self, space, arch, seed: int = 0) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate_one() or evaluate()")

    def evaluate(self, space, archs: Sequence, seed: int = 0) -> list[EvalRecord]:
        out = []
        for a in archs:
            arch = to_arch(space, a)
            t0 = time.perf_counter()
            try:
                metrics = self.evaluate_one(space, arch, seed)
            except TransientEvaluationError as e:
                out.append(self.failed_record(space, arch, seed, f"transient: {e}", time.perf_counter() - t0, transient=True))
                continue
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # one architecture's failure must not end the job
                reason = f"{type(e).__name__}: {e}"
                tb = traceback.format_exc(limit=3)
                out.append(self.failed_record(space, arch, seed, f"{reason}\n{tb}", time.perf_counter() - t0))
                continue
            out.append(self.make_record(space, arch, seed, metrics, time.perf_counter() - t0))
        return out

    # ---- record helpers ----------------------------------------------------------------------
    def make_record(self, space, arch, seed: int, metrics: dict, seconds: float = 0.0) -> EvalRecord:
        """An ok record, or a failed one when a metric is missing, non-numeric or non-finite."""
        clean, reason = check_metrics(metrics)
        if reason is not None:
            return self.failed_record(space, arch, seed, reason, seconds)
        return EvalRecord(space.name, self.record_key(space, arch), space.format(arch), self.fingerprint(), int(seed),
                          STATUS_OK, clean, None, float(seconds), 1, False)

    def failed_record(self, space, arch, seed: int, reason: str, seconds: float = 0.0, transient: bool = False) -> EvalRecord:
        return EvalRecord(space.name, self.record_key(space, arch), space.format(arch), self.fingerprint(), int(seed),
                          STATUS_FAILED, {}, str(reason), float(seconds), 1, bool(transient))

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "fingerprint": self.fingerprint(),
                "settings": self.settings(), "metric_units": dict(self.metric_units)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fingerprint={self.fingerprint()!r})"


# ---- registry ---------------------------------------------------------------------------------
# kind -> "module:Class", imported only when asked for, so listing evaluators never imports torch
# training code or optional packages.
_REGISTRY: dict[str, str] = {
    "table": "evaluators.tables:TableEvaluator",
    "nb201_table": "evaluators.tables:NB201TableEvaluator",
    "nasbench_graph": "evaluators.tables:NASBenchGraphEvaluator",
    "nats_bench": "evaluators.tables:NATSBenchEvaluator",
    "transnas_table": "evaluators.transnas:TransNASTableEvaluator",
    "train": "evaluators.training:TrainingEvaluator",
    "training": "evaluators.training:TrainingEvaluator",  # alias used in configs
}


def register_evaluator(kind: str, target: str) -> None:
    """Register ``"module:Class"`` under ``kind`` (plug-ins may call this)."""
    if ":" not in target:
        raise ConfigError(f"evaluator target must look like 'package.module:Class', got {target!r}")
    _REGISTRY[kind] = target


def list_evaluators() -> list[str]:
    return sorted(_REGISTRY)


def get_evaluator(kind: str, **settings) -> Evaluator:
    """A new evaluator of ``kind`` built with ``settings`` (keyword arguments of its class)."""
    if kind not in _REGISTRY:
        raise UnknownNameError("evaluator", kind, _REGISTRY)
    mod, cls = _REGISTRY[kind].split(":")
    try:
        klass = getattr(importlib.import_module(mod), cls)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"evaluator {kind!r} ({_REGISTRY[kind]}) is not available: {e}") from e
    try:
        return klass(**settings)
    except TypeError as e:
        raise ConfigError(f"evaluator {kind!r}: bad settings {sorted(settings)}: {e}") from e


def space_of(space):
    """Accept a space instance or a registered space name."""
    if isinstance(space, str):
        from search_spaces import get_space

        return get_space(space)
    return space


def parse_all(space, archs: Iterable) -> list:
    """Parse every input up front so an encoding mistake is reported before any compute is spent."""
    out = []
    for i, a in enumerate(archs):
        try:
            out.append(to_arch(space, a))
        except EncodingError as e:
            raise EncodingError(f"architecture #{i} cannot be parsed by space {space.name!r}: {e}") from e
    return out
