"""Evaluation tasks: a chunk of architectures into the evaluation store, store lookups, and one
batch on a work pool through the ``evaluate-batch`` deployment."""

from __future__ import annotations

from typing import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

_TASK = dict(cache_policy=NO_CACHE, persist_result=False)


def make_evaluator(kind: str, settings: dict):
    """The evaluator ``kind`` built with ``settings``."""
    from evaluators import get_evaluator

    return get_evaluator(kind, **dict(settings))


@task(name="evaluate-chunk", **_TASK)
def evaluate_chunk(space: str, archs: list, kind: str, settings: dict, store: str, seed: int = 0, retries: int = 2) -> dict:
    """Evaluate one chunk, reusing and filling the store; per-architecture failures are records."""
    from evaluators import EvaluationStore, evaluate_archs

    with EvaluationStore(store) as st:
        res = evaluate_archs(make_evaluator(kind, settings), space, archs, st, seed=seed, retries=retries, progress=False)
    return {"new": res.new, "reused": res.reused, "failed": res.failed, "n": len(archs), "fingerprint": res.fingerprint}


def lookup_records(space, archs: Sequence, evaluator, store: str, seed: int = 0) -> list:
    """Records of ``archs`` (Arch objects; aligned, None where absent) as stored for ``evaluator``."""
    from evaluators import EvaluationStore

    keys = [evaluator.record_key(space, a) for a in archs]
    with EvaluationStore(store) as st:
        got = st.get_many(space.name, list(dict.fromkeys(keys)), evaluator.fingerprint(), seed)
    return [got.get(k) for k in keys]


@task(name="evaluate-remote", **_TASK)
def evaluate_remote(deployment: str, parameters: dict, timeout_s: float) -> dict:
    """Run one batch on a work pool through the `evaluate-batch` deployment and wait for it."""
    from prefect.deployments import run_deployment

    fr = run_deployment(name=deployment, parameters=parameters, timeout=timeout_s)
    state = fr.state
    if state is None or not state.is_completed():
        raise RuntimeError(f"remote evaluation flow run {fr.id} on {deployment!r} ended {getattr(state, 'name', 'unknown')}: "
                           f"{getattr(state, 'message', '')}")
    return {"flow_run_id": str(fr.id)}
