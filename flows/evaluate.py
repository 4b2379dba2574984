"""Evaluation: the `evaluate-batch` flow and the run's view of it (:class:`Evaluations`).

`evaluate-batch` is deployable on its own (e.g. on a `gpu` work pool) so that real training runs
on GPU workers while the driver flow runs on a CPU; the driver calls it in-process as a subflow
when ``evaluator.deployment`` is unset. Chunks fan out as tasks, at most ``concurrency`` at a time
(and server-wide by a tag concurrency limit on ``tag``); a chunk that raises is retried by Prefect,
a single failing architecture is a stored failure record.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger

from evaluators import EvaluationError, EvaluationStore, evaluate_archs
from tasks.config import RunConfig
from tasks.evaluation import evaluate_chunk, evaluate_remote, lookup_records, make_evaluator
from tasks.layout import RunLayout


def batch_run_name() -> str:
    """Flow-run name of a batch: ``evaluate-<number of architectures>-<space>``."""
    from prefect.runtime import flow_run

    p = flow_run.parameters or {}
    return f"evaluate-{len(p.get('archs') or [])}-{p.get('space', 'space')}"


@flow(name="evaluate-batch", flow_run_name=batch_run_name, validate_parameters=True)
def evaluate_batch(
    space: str,
    archs: list,
    evaluator: str,
    settings: dict | None = None,
    store: str = "evaluations.sqlite",
    seed: int = 0,
    retries: int = 2,
    batch_size: int = 64,
    concurrency: int = 2,
    tag: str = "autobuild-eval",
    task_retries: int = 2,
    retry_delay_s: float = 1.0,
) -> dict:
    """Evaluate ``archs`` (native encodings of ``space``) with ``evaluator``(``settings``) into ``store``.

    Returns counts: ``n``, ``new``, ``reused``, ``failed`` (per chunk, summed).
    """
    logger = get_run_logger()
    settings = dict(settings or {})
    chunks = [archs[i:i + batch_size] for i in range(0, len(archs), max(1, batch_size))]
    run_chunk = evaluate_chunk.with_options(tags=[tag], retries=task_retries, retry_delay_seconds=retry_delay_s)
    totals = {"n": 0, "new": 0, "reused": 0, "failed": 0}
    in_flight: list = []

    def collect(fut) -> None:
        res = fut.result()
        for k in totals:
            totals[k] += int(res.get(k, 0))
        logger.info("%d/%d evaluated (%d new, %d reused, %d failed)", totals["n"], len(archs), totals["new"],
                    totals["reused"], totals["failed"])

    logger.info("evaluating %d %s architectures with %s in %d chunk(s)", len(archs), space, evaluator, len(chunks))
    for chunk in chunks:
        if len(in_flight) >= max(1, concurrency):
            collect(in_flight.pop(0))
        in_flight.append(run_chunk.submit(space, chunk, evaluator, settings, store, seed, retries))
    for fut in in_flight:
        collect(fut)
    return totals


class Evaluations:
    """Evaluates architectures for one run (as a subflow, in this process, or on a deployment) and
    keeps the run's tally over distinct architectures: new, reused, failed.

    Args:
        cfg: the run config.
        layout: the run directory's layout (where the evaluation store is).
        space: the run's space.
        settings: evaluator settings (default: ``cfg.evaluator.settings``; the winners' final protocol differs).
        seed: evaluation seed (default: ``cfg.seed``).
    """

    def __init__(self, cfg: RunConfig, layout: RunLayout, space, settings: dict | None = None, seed: int | None = None):
        self.cfg, self.space = cfg, space
        self.kind = cfg.evaluator.kind
        self.settings = dict(cfg.evaluator.settings if settings is None else settings)
        self.seed = cfg.seed if seed is None else seed
        self.store = str(layout.store)
        self.evaluator = make_evaluator(self.kind, self.settings)
        self.status: dict[str, str] = {}  # key -> new | reused
        self.records: dict[str, Any] = {}  # key -> (native, EvalRecord)

    def _lookup(self, archs: list) -> list:
        return lookup_records(self.space, archs, self.evaluator, self.store, self.seed)

    def __call__(self, archs: list, subflow: bool = True) -> list:
        """Records of ``archs`` (Arch objects), evaluating those the store lacks."""
        if not archs:
            return []
        keys = [self.evaluator.record_key(self.space, a) for a in archs]
        before = self._lookup(archs)
        retry = [r is None or (not r.ok and r.transient) for r in before]
        for k, r, again in zip(keys, before, retry):
            if not again and k not in self.status:
                self.status[k] = "reused"
        todo = [self.space.format(a) for a, again in zip(archs, retry) if again]
        if todo:
            ev, fail = self.cfg.evaluator, self.cfg.failure
            params = dict(space=self.cfg.space, archs=todo, evaluator=self.kind, settings=self.settings, store=self.store,
                          seed=self.seed, retries=fail.retries, batch_size=ev.batch_size, concurrency=ev.concurrency,
                          tag=ev.tag, task_retries=fail.retries, retry_delay_s=fail.retry_delay_s)
            if ev.deployment:
                evaluate_remote.with_options(retries=fail.retries, retry_delay_seconds=fail.retry_delay_s)(
                    ev.deployment, params, ev.deployment_timeout_s)
            elif subflow:
                evaluate_batch(**params)
            else:
                with EvaluationStore(self.store) as st:
                    evaluate_archs(self.evaluator, self.space, todo, st, seed=self.seed, retries=fail.retries, progress=False)
        after = self._lookup(archs)
        for k, a, r in zip(keys, archs, after):
            self.status.setdefault(k, "new")
            if r is not None:
                self.records[k] = (self.space.format(a), r)
        return after

    def counts(self) -> dict:
        failed = sum(1 for _, r in self.records.values() if not r.ok)
        return {"total": len(self.status), "new": sum(v == "new" for v in self.status.values()),
                "reused": sum(v == "reused" for v in self.status.values()), "failed": failed}

    def failures(self, limit: int = 5) -> list:
        return [{"arch": a, "error": (r.error or "").splitlines()[0] if r.error else ""}
                for a, r in self.records.values() if not r.ok][:limit]

    def check_failures(self, where: str) -> None:
        """Raise when more than ``failure.max_failure_fraction`` of the evaluations failed."""
        c = self.counts()
        if c["total"] and c["failed"] > self.cfg.failure.max_failure_fraction * c["total"]:
            raise EvaluationError(
                f"{where}: {c['failed']} of {c['total']} evaluations failed with {self.kind!r}, more than "
                f"failure.max_failure_fraction={self.cfg.failure.max_failure_fraction}. First failures: "
                f"{json.dumps(self.failures(), default=str)}. Every finished evaluation is stored; fix the cause "
                "(or raise the fraction) and rerun with the same --out to continue.")
