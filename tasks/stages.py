"""Prefect tasks of the AutoBuild pipeline: each wraps one step of the driver
(:class:`~autobuild_core.driver.AutoBuild`) and persists its output through :class:`RunLayout`.

A task whose output exists for the same inputs returns it without recomputing, so a rerun resumes
at the first unfinished stage; evaluations are persisted in the evaluation store record by
record. Prefect's own result persistence and caching are off: keys depend on the inputs only.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.config import RunConfig, config_hash
from tasks.layout import RunLayout, done, read_json, write_json_atomic, write_stage

_TASK = dict(cache_policy=NO_CACHE, persist_result=False)


def _logger():
    try:
        return get_run_logger()
    except Exception:  # called outside a run (unit tests)
        return logging.getLogger("autobuild")


def table_archs(evaluator, space) -> list:
    """Architectures a table evaluator holds (for ``seeds.source: table``)."""
    items = evaluator.items(space)
    if items is None:
        from search_spaces.errors import ConfigError

        raise ConfigError(f"evaluator {evaluator.name!r} cannot list its architectures, so seeds.source='table' is not possible; "
                          "use seeds.source='sample'.")
    return [a for a, _ in items]


def history_fingerprint(space, history: Sequence[dict]) -> str:
    """Fingerprint of evaluated (architecture, values) pairs: keys the stages trained on them."""
    return config_hash([[json.dumps(space.format(r["arch"]), sort_keys=True, default=str),
                         None if r["values"] is None else [round(float(v), 10) for v in r["values"]]] for r in history])


def calibration_settings(cfg: RunConfig):
    """The run's calibration settings; ``metric`` defaults to the target when the target is a metric name."""
    cs = cfg.calibration
    if "metric" not in cs.model_fields_set and cfg.target.isidentifier():
        cs = cs.model_copy(update={"metric": cfg.target})
    return cs


@task(name="calibrate", **_TASK)
def calibrate_task(cfg: RunConfig, layout: RunLayout, space, runner: Callable | None = None, on_budget: Callable | None = None):
    """Calibrate the training protocol (:func:`evaluators.calibration.calibrate`) into the run's store.

    Every calibration training is an ordinary record of the evaluation store, so a rerun trains
    nothing again. Returns the :class:`~evaluators.calibration.CalibrationResult` (also written to
    ``<run_dir>/calibration.json``) whatever its status; the flow decides whether to stop.
    """
    from evaluators import EvaluationStore
    from evaluators.calibration import calibrate

    cs = calibration_settings(cfg)
    _logger().info("calibrating the training protocol of %s: %d architectures x seeds %s, budgets %s, threshold %s",
                   cfg.space, cs.n_archs, cs.seeds, [b.label() for b in cs.budgets], cs.threshold)
    with EvaluationStore(layout.store) as st:
        res = calibrate(space, dict(cfg.evaluator.settings), st, cs, retries=cfg.failure.retries, runner=runner,
                        on_budget=on_budget, raise_on_failure=False)
    write_json_atomic(layout.calibration, res.to_dict())
    _logger().info(res.message)
    return res


def calibrated_config(cfg: RunConfig, result) -> RunConfig:
    """``cfg`` with the calibrated budget applied to the training evaluator and the winners' final
    training made at least as long (:func:`evaluators.calibration.apply_calibration`)."""
    from evaluators.calibration import apply_calibration

    ev, win = apply_calibration(dict(cfg.evaluator.settings), result, dict(cfg.winners.evaluator_settings))
    out = cfg.model_copy(deep=True)
    out.evaluator.settings = ev
    out.winners.evaluator_settings = win
    return out


@task(name="sample-seeds", **_TASK)
def sample_seeds(ab, cfg: RunConfig, layout: RunLayout, evaluator) -> tuple[list, str]:
    """The seed architectures, persisted so a rerun evaluates the same ones; returns (archs, stage dir)."""
    space = ab.space
    from_table = cfg.seeds.source == "table" or ab.only is not None
    out = layout.stage("seeds", cfg.space, cfg.seed, cfg.seeds, cfg.evaluator.model_dump() if from_table else None)
    if done(out):
        return [space.parse(a) for a in read_json(out / "seeds.json")], layout.relative(out)
    # a table holding part of the space was listed already: the driver draws from those rows (ab.only)
    archs = ab.sample_seeds(pool=table_archs(evaluator, space) if cfg.seeds.source == "table" and ab.only is None else None)
    write_stage(out, {"seeds.json": [space.format(a) for a in archs]}, {"n": len(archs)})
    _logger().info("sampled %d seed architectures of %s", len(archs), cfg.space)
    return archs, layout.relative(out)


@task(name="train-ranker", **_TASK)
def train_ranker_task(ab, cfg: RunConfig, layout: RunLayout, history: list, on_epoch: Callable | None = None):
    """Train (or reload) the ranker on the evaluated history; returns (TrainedRanker, info, stage dir)."""
    from autobuild_core.train import TrainedRanker

    archs, y = ab.training_set(history)
    out = layout.stage("ranker", cfg.space, cfg.ranker, cfg.train, cfg.seed, history_fingerprint(ab.space, history))
    target_range = [float(np.min(y)), float(np.max(y))] if len(y) else None  # what unit scores may claim
    if done(out):
        info = read_json(out / "info.json")
        return TrainedRanker.load(out / "ranker"), dict(info, target_range=info.get("target_range", target_range), reused=True), out
    _logger().info("training the ranker on %d architectures (%d epochs)", len(archs), cfg.train.epochs)
    t0 = time.perf_counter()
    trained = ab.fit_ranker(archs, y, on_epoch=on_epoch)
    info = dict(ranker_quality(trained, archs, y), n_train=len(archs), target_range=target_range,
                seconds=time.perf_counter() - t0, history=list(trained.history or []))
    write_stage(out, {"ranker": lambda d: trained.save(d), "info.json": info})
    _logger().info("ranker trained on %d archs in %.1fs: Spearman %.3f (%s)", len(archs), info["seconds"],
                   info["pred_spearman"], info["spearman_on"])
    return trained, dict(info, reused=False), out


def ranker_quality(trained, archs, y) -> dict:
    """Held-out Spearman of the kept checkpoint, or training Spearman when no validation split was held out."""
    if trained.val_spearman is not None:
        return {"pred_spearman": float(trained.val_spearman), "spearman_on": "validation",
                "hop_spearman": [float(v) for v in (trained.val_hop_spearman or [])], "best_epoch": trained.best_epoch}
    ev = trained.evaluate(archs, y)
    return {"pred_spearman": float(ev["pred_spearman"]), "spearman_on": "training",
            "hop_spearman": [float(v) for v in ev["hop_spearman"]], "best_epoch": None}


@task(name="score-units", **_TASK)
def score_units_task(ab, cfg: RunConfig, layout: RunLayout, trained, ranker_dir: Path, archs=None):
    """Score every unit configuration; read out the FE-MLP scalars (with their ``count`` and ``spread``
    over ``archs``, the ranker's training architectures) and the feature-value effects (CSV, reused on rerun)."""
    import pandas as pd

    out = layout.stage("scores", ranker_dir.name, cfg.prune.scoring)
    if not done(out):
        t0 = time.perf_counter()
        scores, imp = ab.score(trained, archs)
        effects = ab.effects(trained)
        write_stage(out, {"unit_scores.csv": lambda p: scores.to_csv(p, index=False),
                          "importance.csv": lambda p: imp.to_csv(p, index=False),
                          "op_effects.csv": lambda p: effects.to_csv(p, index=False)},
                    {"seconds": time.perf_counter() - t0})
    return pd.read_csv(out / "unit_scores.csv"), pd.read_csv(out / "importance.csv"), out


@task(name="build-and-prune", **_TASK)
def build_prune_task(ab, cfg: RunConfig, layout: RunLayout, scores, importance, scores_dir: Path, remaining: int) -> tuple[dict, Path]:
    """Built architectures (native) and the pruned space (as a dict), persisted as JSON."""
    out = layout.stage("build", scores_dir.name, cfg.build, cfg.prune, remaining)
    if not done(out):
        built = ab.build(scores, importance)
        pruned = ab.prune(scores, importance, remaining - len(built))
        res = {"built": [ab.space.format(a) for a in built], "pruned": None if pruned is None else json.loads(pruned.to_json())}
        write_stage(out, {"build.json": res})
    return read_json(out / "build.json"), out


@task(name="search", **_TASK)
def search_task(ab, cfg: RunConfig, layout: RunLayout, history: list, pruned_d: dict | None, key: str,
                on_trial: Callable | None = None, on_round: Callable | None = None) -> tuple[dict, Path]:
    """Spend the rest of the budget with the configured method; the result is persisted as JSON.

    A rerun after a kill replays the search from its seed: evaluations come back from the store
    (nothing is evaluated twice) and the result is the one an uninterrupted run gives.
    """
    from autobuild_core.build import PrunedSpace
    from autobuild_core.driver import ITERATIVE_METHODS

    space = ab.space
    search_cfg = cfg.search.model_dump(exclude={"enabled"})
    out = layout.stage("search", key, search_cfg, cfg.seed, history_fingerprint(space, history))
    if done(out):
        return read_json(out / "search.json"), out
    pruned = PrunedSpace.from_dict(space, pruned_d) if pruned_d else None
    kwargs: dict[str, Any] = {"on_trial": on_trial}
    rounds: list = []
    if cfg.search.method in ITERATIVE_METHODS:
        def record_round(info: dict) -> None:
            rounds.append(info)
            if on_round is not None:
                on_round(info)

        kwargs["on_round"] = record_round
    else:
        study = f"{cfg.name}-{config_hash(key, search_cfg, cfg.seed, n=10)}"
        _fresh_study(layout.optuna_url, study)
        kwargs.update(storage=layout.optuna_url, study_name=study)
    _logger().info("searching with %s, %d evaluations in all (%d done)", cfg.search.method, cfg.search.budget, len(history))
    t0 = time.perf_counter()
    result = ab.search(history, pruned, **kwargs)

    def rec(r):
        return {"arch": space.format(r["arch"]), "values": None if r["values"] is None else list(r["values"]),
                "n_eval": r["n_eval"], "source": r.get("source")}

    res = {
        "method": result.method, "study_name": result.study_name, "n_eval": result.n_eval,
        "history": [rec(r) for r in result.history],
        "best": None if result.best is None else rec(result.best),
        "pareto": [rec(r) for r in result.pareto],
        "trajectory": [None if (isinstance(v, float) and math.isnan(v)) else v for v in result.best_trajectory()],
        "seconds": time.perf_counter() - t0,
        "domain_size": pruned.size if pruned is not None and cfg.search.space == "pruned" and not rounds else space.size(),
        "rounds": [round_summary(space, r) for r in rounds],
    }
    files: dict[str, Any] = {"search.json": res}
    for r in rounds:
        if r.get("unit_scores") is not None:
            files[f"round_{r['round']:03d}_unit_scores.csv"] = (lambda df: lambda p: df.to_csv(p, index=False))(r["unit_scores"])
    write_stage(out, files)
    return res, out


def round_summary(space, info: dict) -> dict:
    """The JSON-able part of one iterative round's information (tables go to CSV)."""
    out = {}
    for k, v in info.items():
        if k == "unit_scores":
            continue
        if k == "batch":
            v = [space.format(a) for a in v]
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = json.loads(json.dumps(v, default=str))
    return out


def _fresh_study(storage: str, study: str) -> None:
    """Delete a study left by a killed run: the rerun replays the search from its seed instead."""
    import optuna

    try:
        optuna.delete_study(study_name=study, storage=storage)
    except KeyError:
        pass


@task(name="winners", **_TASK)
def winners_task(cfg: RunConfig, evals, final_evals, target, obj_fns, directions) -> list[dict]:
    """The best distinct architectures found, re-evaluated with the final protocol (``winners``)."""
    sign = 1 if directions[0] == "maximize" else -1
    cands = []
    for a, r in evals.records.values():
        if r.ok:
            v = value_of(obj_fns[0], r.metrics)
            if v is not None:
                cands.append((sign * v, a, r))
    cands.sort(key=lambda t: -t[0])
    top = cands[: cfg.winners.top]
    if not top:
        return []
    frecs = final_evals([evals.space.parse(a) for _, a, _ in top])
    winners = []
    for i, ((_, a, r), fr) in enumerate(zip(top, frecs)):
        fm = fr.metrics if fr is not None and fr.ok else None
        winners.append({"rank": i + 1, "arch": a, "search_metrics": r.metrics, "metrics": fm,
                        "error": None if fm else (fr.error if fr is not None else "not evaluated"),
                        "target": value_of(target, fm)})
    return winners


def value_of(fn, metrics: dict | None) -> float | None:
    """``fn(metrics)`` as a finite float, or None (no metrics, a missing metric, a non-finite value)."""
    if metrics is None:
        return None
    try:
        v = float(fn(metrics))
    except Exception:
        return None
    return v if math.isfinite(v) else None


__all__ = ["calibrate_task", "calibrated_config", "calibration_settings", "sample_seeds", "train_ranker_task", "score_units_task", "build_prune_task", "search_task", "winners_task",
           "table_archs", "history_fingerprint", "ranker_quality", "value_of"]
