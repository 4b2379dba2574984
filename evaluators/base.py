"""The evaluator contract: what "measure these architectures" means to the rest of the project.

Everything downstream (the store, the ranker's labels, the searches) only sees
:class:`EvalRecord` objects, so a benchmark table, a training run and a remote cluster look the
same. One architecture's failure is a failed record with a reason, never an exception; a record
is identified by ``(space, key, fingerprint, seed)``, where the fingerprint hashes everything
that changes results. Also here: the evaluator registry. Why these rules: docs/evaluation.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from search_spaces.errors import AutoBuildError, ConfigError, EncodingError
from search_spaces.registry import Registry

STATUS_OK = "ok"
STATUS_FAILED = "failed"
_STATUSES = (STATUS_OK, STATUS_FAILED)


class TransientEvaluationError(Exception):
    """Raise inside an evaluator for failures worth retrying (CUDA OOM, a lost worker, a busy
    device). Anything else raised is taken as a property of the architecture and not retried."""


class EvaluationError(AutoBuildError):
    """A whole evaluation job went wrong (e.g. more failures than the caller tolerates).

    Args:
        message: what went wrong and what to do.
        outcome: the :class:`~evaluators.store.EvaluationOutcome` evaluated before giving up;
            every record in it is already stored.
    """

    def __init__(self, message: str, outcome: Any = None):
        super().__init__(message)
        self.outcome = outcome


@dataclass
class EvalRecord:
    """One measurement of one architecture.

    Attributes:
        space: the space's name.
        key: what the record is looked up by (normally ``space.key(arch)``).
        arch: the space's native encoding (JSON-able), so a record stays readable without this code.
        fingerprint: :meth:`Evaluator.fingerprint` of the evaluator that made it.
        seed: evaluation seed.
        status: ``"ok"`` or ``"failed"``.
        metrics: metric name -> finite float (empty when failed).
        error: the failure reason (None when ok).
        seconds: time spent on this architecture.
        attempts: evaluations tried (retries included).
        transient: a failure that may succeed if retried; a placeholder that a later record
            replaces (see :mod:`.store`).
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
        """Whether the status is ``"ok"``."""
        return self.status == STATUS_OK

    def to_dict(self) -> dict:
        """The record as a plain dict (JSON-able)."""
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "EvalRecord":
        """Inverse of :meth:`to_dict`; optional fields take their defaults.

        Args:
            d: a dict with at least space, key, arch and fingerprint.
        """
        return EvalRecord(
            space=d["space"], key=d["key"], arch=d["arch"], fingerprint=d["fingerprint"], seed=int(d.get("seed", 0)),
            status=d.get("status", STATUS_OK), metrics=dict(d.get("metrics") or {}), error=d.get("error"),
            seconds=float(d.get("seconds") or 0.0), attempts=int(d.get("attempts") or 1), transient=bool(d.get("transient", False)),
        )


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces): the form that is hashed and compared.

    Args:
        obj: any JSON-able value (NaN and infinity are refused).
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def exact_key(space, arch) -> str:
    """The key of the encoding itself, ignoring any isomorphism the space knows about.

    Args:
        space: the search space.
        arch: an ``Arch`` of that space.
    """
    return canonical_json(space.format(arch))


def to_arch(space, obj):
    """Accept an ``Arch`` or any native encoding the space parses, so callers can pass either.

    ``search_spaces.base`` is looked up, not imported: it pulls in torch, and if it was never
    imported no ``Arch`` can exist to be recognised.

    Args:
        space: the search space.
        obj: an ``Arch`` (returned as is) or a native encoding (parsed).
    """
    base = sys.modules.get("search_spaces.base")
    if base is not None and isinstance(obj, base.Arch):
        return obj
    return space.parse(obj)


def check_metrics(metrics: Any) -> tuple[dict[str, float], str | None]:
    """Coerce metric values to float; a missing, non-numeric or non-finite value is a failure
    reason rather than a number, because NaN labels poison the ranker without any error.

    Args:
        metrics: what an evaluator returned for one architecture.

    Returns:
        ``(clean metrics, None)``, or ``({}, reason)`` when the metrics cannot be used.
    """
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
    """A best-effort unit for tables that do not declare one (documented, overridable).

    Args:
        metric: a metric name such as ``acc`` or ``latency_ms``.

    Example:
        >>> guess_unit("cifar10_test_acc"), guess_unit("latency_ms"), guess_unit("loss")
        ('%', 'ms', '')
    """
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

    Attributes:
        name: the evaluator's kind; part of the fingerprint.
        version: bump it when the class's results change; part of the fingerprint.
        metric_units: metric name -> unit (``"%"``, ``"ms"``, ``"count"``, ...).
        deterministic: results do not depend on the seed (tables).
        batch_size: architectures :func:`~evaluators.store.evaluate_archs` hands over per call.
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
        """sha256 of name, version and :meth:`settings` (16 hex digits): records made with other
        settings never mix with these."""
        payload = canonical_json({"name": self.name, "version": str(self.version), "settings": self.settings()})
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def record_key(self, space, arch) -> str:
        """What records are stored under; isomorphic architectures share one by default.

        Args:
            space: the search space.
            arch: an ``Arch`` of that space.
        """
        return space.key(arch)

    def items(self, space) -> list | None:
        """Every distinct ``(Arch, metrics)`` the evaluator holds (labelled tables), in a stable
        order, or None when it cannot list them in advance (training). Used for seeds taken from a
        table, for ranker benchmarks, and for a benchmark's optimum and true Pareto front.

        Args:
            space: the search space to parse the entries in.
        """
        return None

    def metric_names(self) -> list[str] | None:
        """The metric names every ok record carries, or None when they are not known in advance
        (checked against target expressions before a run starts)."""
        return None

    def evaluate_one(self, space, arch, seed: int = 0) -> dict[str, float]:
        """Measure one architecture; raise to fail it (``TransientEvaluationError`` to retry).

        Args:
            space: the search space.
            arch: an ``Arch`` of that space.
            seed: evaluation seed.

        Returns:
            Metric name -> number.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate_one() or evaluate()")

    def evaluate(self, space, archs: Sequence, seed: int = 0) -> list[EvalRecord]:
        """One record per architecture, in order; a failing architecture becomes a failed record.

        Args:
            space: the search space.
            archs: ``Arch`` objects or native encodings.
            seed: evaluation seed.
        """
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
        """An ok record, or a failed one when a metric is missing, non-numeric or non-finite.

        Args:
            space: the search space.
            arch: the ``Arch`` measured.
            seed: evaluation seed.
            metrics: metric name -> value as measured.
            seconds: time spent.
        """
        clean, reason = check_metrics(metrics)
        if reason is not None:
            return self.failed_record(space, arch, seed, reason, seconds)
        return EvalRecord(space.name, self.record_key(space, arch), space.format(arch), self.fingerprint(), int(seed),
                          STATUS_OK, clean, None, float(seconds), 1, False)

    def failed_record(self, space, arch, seed: int, reason: str, seconds: float = 0.0, transient: bool = False) -> EvalRecord:
        """A failed record carrying ``reason``.

        Args:
            space: the search space.
            arch: the ``Arch`` that failed.
            seed: evaluation seed.
            reason: why, in words a user can act on.
            seconds: time spent.
            transient: the failure may succeed if retried (the store keeps it as a placeholder).
        """
        return EvalRecord(space.name, self.record_key(space, arch), space.format(arch), self.fingerprint(), int(seed),
                          STATUS_FAILED, {}, str(reason), float(seconds), 1, bool(transient))

    def describe(self) -> dict:
        """Name, version, fingerprint, settings and metric units, JSON-able."""
        return {"name": self.name, "version": self.version, "fingerprint": self.fingerprint(),
                "settings": self.settings(), "metric_units": dict(self.metric_units)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fingerprint={self.fingerprint()!r})"


# ---- registry ---------------------------------------------------------------------------------
# kind -> "module:Class", imported only when asked for, so listing evaluators never imports torch
# training code or optional packages.
EVALUATORS: Registry = Registry("evaluator")
EVALUATORS.register("table", "evaluators.tables:TableEvaluator")
EVALUATORS.register("nb201_table", "evaluators.tables:NB201TableEvaluator")
EVALUATORS.register("nasbench_graph", "evaluators.tables:NASBenchGraphEvaluator")
EVALUATORS.register("nats_bench", "evaluators.tables:NATSBenchEvaluator")
EVALUATORS.register("train", "evaluators.training:TrainingEvaluator", aliases=("training",))
EVALUATORS.register("transnas_table", "evaluators.transnas:TransNASTableEvaluator")
EVALUATORS.register("ofa_mbv3_surrogate", "evaluators.surrogate:OFASurrogateEvaluator")


def partial_table_archs(evaluator: Evaluator, space, probe: int = 256, seed: int = 0, items: list | None = None) -> list | None:
    """The architectures a table evaluator holds when it holds only part of ``space``, else None.

    A probe of ``probe`` random draws from the space (fixed ``seed``) tells a table that covers the
    space (NAS-Bench-201, NAS-Bench-Graph's Cora: every draw is a row) from one that does not
    (NAS-Bench-Graph's proteins: 2,021 of 26,206 architectures; a user's table of a few hundred
    trained networks). Searches restricted to the returned list spend no evaluation on an
    architecture the table cannot answer. Evaluators that cannot list their architectures
    (training) give None.

    Args:
        evaluator: the evaluator.
        space: the search space.
        probe: random draws checked against the table.
        seed: seed of the draws.
        items: ``evaluator.items(space)`` when the caller has it already.

    Example:
        >>> partial_table_archs(get_evaluator("nasbench_graph", dataset="proteins"), space)  # doctest: +SKIP
    """
    items = evaluator.items(space) if items is None else items
    if items is None:
        return None
    keys = {evaluator.record_key(space, a) for a, _ in items}
    draws = space.sample(probe, seed=seed)
    if all(evaluator.record_key(space, a) in keys for a in draws):
        return None
    return [a for a, _ in items]


def register_evaluator(kind: str, target) -> None:
    """Register an evaluator class under ``kind`` (plug-ins may call this).

    Args:
        kind: the name configs use (``evaluator.kind``).
        target: the class, or ``"module:Class"`` to import it only when first used.
    """
    EVALUATORS.register(kind, target)


def list_evaluators() -> list[str]:
    """Registered evaluator kinds."""
    return EVALUATORS.names()


def get_evaluator(kind: str, **settings) -> Evaluator:
    """A new evaluator of a registered kind.

    Args:
        kind: a name from :func:`list_evaluators` (e.g. ``"table"``, ``"train"``).
        **settings: keyword arguments of the evaluator's class.

    Raises:
        UnknownNameError: ``kind`` is not registered (with suggestions).
        ConfigError: the settings do not fit the class.

    Example:
        >>> ev = get_evaluator("nasbench_graph", dataset="cora")  # doctest: +SKIP
    """
    klass = EVALUATORS.get(kind)
    try:
        return klass(**settings)
    except TypeError as e:
        raise ConfigError(f"evaluator {kind!r}: bad settings {sorted(settings)}: {e}") from e


def space_of(space):
    """Accept a space instance or a registered space name.

    Args:
        space: a ``SearchSpace`` or a name such as ``"nb201"``.
    """
    if isinstance(space, str):
        from search_spaces import get_space

        return get_space(space)
    return space


def parse_all(space, archs: Iterable) -> list:
    """Parse every input up front so an encoding mistake is reported before any compute is spent.

    Args:
        space: the search space.
        archs: ``Arch`` objects or native encodings.

    Raises:
        EncodingError: naming the position of the first input that does not parse.
    """
    out = []
    for i, a in enumerate(archs):
        try:
            out.append(to_arch(space, a))
        except EncodingError as e:
            raise EncodingError(f"architecture #{i} cannot be parsed by space {space.name!r}: {e}") from e
    return out
