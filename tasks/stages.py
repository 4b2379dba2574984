"""Prefect tasks of the AutoBuild pipeline: thin wrappers over ``autobuild_core`` calls.

Each task persists its output under ``<run dir>/stages`` keyed by its inputs (see
:mod:`tasks.common`) and returns it; a rerun finds the output and returns it without recomputing.
Evaluations are persisted in the evaluation store, record by record. Prefect's own result
persistence and caching are off (``NO_CACHE``): the keys here depend on the inputs only.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.config import RunConfig, config_hash

from .common import get_space, make_evaluator, read_json, stage_dir, stage_done, write_stage

_TASK = dict(cache_policy=NO_CACHE, persist_result=False)


def _logger():
    try:
        return get_run_logger()
    except Exception:  # called outside a run (unit tests)
        import logging

        return logging.getLogger("autobuild")


# ---- seeds ---------------------------------------------------------------------------------------


def table_archs(evaluator, space) -> list:
    """Architectures a table evaluator holds (for ``seeds.source: table``)."""
    items = evaluator.items(space)
    if items is None:
        from search_spaces.errors import ConfigError

        raise ConfigError(f"evaluator {evaluator.name!r} cannot list its architectures, so seeds.source='table' is not possible; "
                          "use seeds.source='sample'.")
    out, seen = [], set()
    for a, _ in items:
        k = space.key(a)
        if k not in seen:
            seen.add(k)
            out.append(a)
    return out


@task(name="sample-seeds", **_TASK)
def sample_seeds(cfg: RunConfig, run_dir: str) -> list:
    """The seed architectures (native encodings), persisted so a rerun evaluates the same ones."""
    space = get_space(cfg.space)
    extra = cfg.evaluator.model_dump() if cfg.seeds.source == "table" else None
    out = stage_dir(run_dir, "seeds", cfg.space, cfg.seed, cfg.seeds, extra)
    if stage_done(out):
        return read_json(out / "seeds.json")
    if cfg.seeds.source == "table":
        ev = make_evaluator(cfg.evaluator.kind, cfg.evaluator.settings)
        archs = table_archs(ev, space)
        rng = np.random.default_rng(cfg.seed)
        if len(archs) > cfg.seeds.n:
            archs = [archs[i] for i in sorted(rng.choice(len(archs), cfg.seeds.n, replace=False))]
    else:
        archs = space.sample(cfg.seeds.n, seed=cfg.seed, stratified=cfg.seeds.stratified)
    native = [space.format(a) for a in archs]
    write_stage(out, {"seeds.json": native}, {"n": len(native)})
    _logger().info("sampled %d seed architectures of %s", len(native), cfg.space)
    return native


# ---- evaluation ----------------------------------------------------------------------------------


@task(name="evaluate-chunk", **_TASK)
def evaluate_chunk(space: str, archs: list, kind: str, settings: dict, store: str, seed: int = 0, retries: int = 2) -> dict:
    """Evaluate one chunk, reusing and filling the store; per-arch failures are records."""
    from evaluators import EvaluationStore, evaluate_archs

    ev = make_evaluator(kind, settings)
    with EvaluationStore(store) as st:
        res = evaluate_archs(ev, space, archs, st, seed=seed, retries=retries, progress=False)
    return {"new": res.new, "reused": res.reused, "failed": res.failed, "n": len(archs), "fingerprint": res.fingerprint}


def lookup_records(space_name: str, archs: Sequence, kind: str, settings: dict, store: str, seed: int = 0, evaluator=None) -> list:
    """Records of ``archs`` (aligned; None where absent) as stored for this evaluator."""
    from evaluators import EvaluationStore

    space = get_space(space_name)
    ev = evaluator if evaluator is not None else make_evaluator(kind, settings)
    fp = ev.fingerprint()
    parsed = [a if hasattr(a, "units") else space.parse(a) for a in archs]
    keys = [ev.record_key(space, a) for a in parsed]
    with EvaluationStore(store) as st:
        got = st.get_many(space.name, list(dict.fromkeys(keys)), fp, seed)
    return [got.get(k) for k in keys]


@task(name="evaluate-remote", **_TASK)
def evaluate_remote(deployment: str, parameters: dict, timeout_s: float) -> dict:
    """Run one batch on a work pool through the `evaluate_batch` deployment and wait for it."""
    from prefect.deployments import run_deployment

    fr = run_deployment(name=deployment, parameters=parameters, timeout=timeout_s)
    state = fr.state
    if state is None or not state.is_completed():
        raise RuntimeError(f"remote evaluation flow run {fr.id} on {deployment!r} ended {getattr(state, 'name', 'unknown')}: {getattr(state, 'message', '')}")
    return {"flow_run_id": str(fr.id)}


# ---- ranker ----------------------------------------------------------------------------------------


def labels_fingerprint(archs_native: Sequence, y: Sequence[float]) -> str:
    return config_hash([json.dumps(a, sort_keys=True, default=str) for a in archs_native], [round(float(v), 10) for v in y])


@task(name="train-ranker", **_TASK)
def train_ranker_task(cfg: RunConfig, run_dir: str, archs_native: list, y: list, on_epoch: Callable | None = None):
    """Train (or reload) the ranker; returns (TrainedRanker, info dict, ranker dir, key)."""
    from autobuild_core.ranker import RankerConfig
    from autobuild_core.train import TrainConfig, TrainedRanker, train_ranker

    key = config_hash(cfg.space, cfg.target, cfg.ranker, cfg.train, cfg.seed, labels_fingerprint(archs_native, y))
    out = stage_dir(run_dir, "ranker", key)
    if stage_done(out):
        info = read_json(out / "info.json")
        return TrainedRanker.load(out / "ranker"), dict(info, reused=True), str(out / "ranker"), key
    space = get_space(cfg.space)
    archs = [space.parse(a) for a in archs_native]
    rc = RankerConfig(gnn=cfg.ranker.gnn, hidden=cfg.ranker.hidden, layers=cfg.ranker.layers)
    t = cfg.train
    tc = TrainConfig(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay, rank_weight=t.rank_weight,
                     grad_clip=t.grad_clip, seed=cfg.seed, val_fraction=t.val_fraction, device=t.device, progress=True)
    _logger().info("training the ranker on %d architectures (%d epochs)", len(archs), t.epochs)
    t0 = time.perf_counter()
    trained = train_ranker(space, archs, np.asarray(y, dtype=float), ranker=rc, train=tc, on_epoch=on_epoch)
    seconds = time.perf_counter() - t0
    hist = list(getattr(trained, "history", []) or [])
    val = [h for h in hist if h.get("val_pred_spearman") is not None]
    if val:
        pred = float(val[-1]["val_pred_spearman"])
        hops = [float(v) for v in (val[-1].get("val_hop_spearman") or [])]
        on = "validation"
    else:
        ev = trained.evaluate(archs, y)
        pred, hops, on = float(ev["pred_spearman"]), [float(v) for v in ev["hop_spearman"]], "training"
    info = {"pred_spearman": pred, "hop_spearman": hops, "spearman_on": on, "n_train": len(archs), "seconds": seconds,
            "history": hist, "key": key}
    write_stage(out, {"ranker": lambda d: trained.save(d), "info.json": info})
    _logger().info("ranker trained on %d archs in %.1fs: Spearman %.3f (%s), per hop %s", len(archs), seconds, pred, on,
                   [round(h, 3) for h in hops])
    return trained, dict(info, reused=False), str(out / "ranker"), key


# ---- scores, build, prune ---------------------------------------------------------------------------


@task(name="score-units", **_TASK)
def score_units_task(cfg: RunConfig, run_dir: str, trained, ranker_key: str):
    """Score every unit configuration and read out FE-MLP feature importance (CSV, reused on rerun)."""
    import pandas as pd

    method = cfg.prune.scoring
    out = stage_dir(run_dir, "scores", ranker_key) if method == "paper" else stage_dir(run_dir, "scores", ranker_key, method)
    if stage_done(out):
        return pd.read_csv(out / "unit_scores.csv"), pd.read_csv(out / "importance.csv"), str(out)
    from autobuild_core.importance import feature_importance
    from autobuild_core.scoring import score_units

    space = get_space(cfg.space)
    t0 = time.perf_counter()
    scores = score_units(trained, space, method=method, seed=cfg.seed)
    imp = feature_importance(trained, space)
    write_stage(out, {"unit_scores.csv": lambda p: scores.to_csv(p, index=False),
                      "importance.csv": lambda p: imp.to_csv(p, index=False)},
                {"seconds": time.perf_counter() - t0})
    return pd.read_csv(out / "unit_scores.csv"), pd.read_csv(out / "importance.csv"), str(out)


@task(name="build-and-prune", **_TASK)
def build_prune_task(cfg: RunConfig, run_dir: str, scores, importance, ranker_key: str) -> dict:
    """Built architectures (native) and the pruned space (as a dict), persisted as JSON."""
    out = stage_dir(run_dir, "build", ranker_key, cfg.build, cfg.prune)
    if stage_done(out):
        return read_json(out / "build.json")
    from autobuild_core.build import build_arch, prune_space

    space = get_space(cfg.space)
    built: list = []
    pruned_d = None
    pruned = None
    if cfg.prune.enabled or cfg.build.n > 1:
        k = cfg.prune.k if cfg.prune.enabled else 1
        pruned = prune_space(space, scores, k=k, importance=importance)
        pruned_d = json.loads(pruned.to_json()) if cfg.prune.enabled else None
    if cfg.build.enabled:
        first = build_arch(space, scores, importance)
        built.append(first)
        if cfg.build.n > 1 and pruned is not None:
            seen = {space.key(first)}
            for a in pruned.enumerate_by_score(limit=cfg.build.n * 4):
                if len(built) >= cfg.build.n:
                    break
                if space.key(a) not in seen:
                    seen.add(space.key(a))
                    built.append(a)
    res = {"built": [space.format(a) for a in built], "pruned": pruned_d}
    write_stage(out, {"build.json": res})
    return res


# ---- search -------------------------------------------------------------------------------------------


@task(name="search", **_TASK)
def search_task(cfg: RunConfig, run_dir: str, which: str, pruned_d: dict | None, objective: Callable,
                storage: str | None, on_trial: Callable | None = None, key: str = "") -> dict:
    """Run the configured search over the pruned (or full) space; the result is persisted as JSON.

    Optuna studies live in ``storage`` (SQLite in the run dir) and resume on rerun; evaluations are
    answered from the store, so a rerun of a killed search spends no evaluation twice.
    """
    out = stage_dir(run_dir, f"search-{which}", key, cfg.search.model_dump(exclude={"enabled", "space"}), cfg.seed)
    if stage_done(out):
        return read_json(out / "search.json")
    from autobuild_core.search import run_search

    space = get_space(cfg.space)
    if which == "pruned":
        from autobuild_core.build import PrunedSpace

        domain = PrunedSpace.from_dict(space, pruned_d)
    else:
        domain = space
    objs = cfg.objectives()
    t0 = time.perf_counter()
    study = f"{cfg.name}-{which}-{config_hash(key, cfg.search.model_dump(exclude={'enabled', 'space'}), cfg.seed, n=10)}"
    if storage:
        # A rerun after a kill replays the search from its seed instead of resuming the sampler
        # mid-way: evaluations come back from the store (nothing is evaluated twice) and the result
        # is the one an uninterrupted run gives. The finished study stays for optuna-dashboard.
        import optuna

        try:
            optuna.delete_study(study_name=study, storage=storage)
        except KeyError:
            pass
    _logger().info("searching the %s space with %s, budget %d", which, cfg.search.method, cfg.search.budget)
    result = run_search(cfg.search.method, domain, objective, budget=cfg.search.budget, seed=cfg.seed,
                        directions=tuple(o.direction for o in objs), storage=storage, study_name=study,
                        on_trial=on_trial, batch_size=cfg.search.batch_size)

    def rec(r):
        return {"arch": space.format(r["arch"]), "values": None if r["values"] is None else list(r["values"]),
                "n_eval": r["n_eval"], "source": r.get("source")}

    res = {
        "which": which, "method": result.method, "study_name": result.study_name, "n_eval": result.n_eval,
        "history": [rec(r) for r in result.history],
        "best": None if result.best is None else rec(result.best),
        "pareto": [rec(r) for r in result.pareto],
        "trajectory": [None if (isinstance(v, float) and math.isnan(v)) else v for v in result.best_trajectory()],
        "seconds": time.perf_counter() - t0,
        "domain_size": getattr(domain, "size", None) if which == "pruned" else space.size(),
    }
    write_stage(out, {"search.json": res})
    return res
