"""The `autobuild` flow: seeds -> evaluate -> ranker -> unit scores -> build/prune -> search -> winners.

Each stage is a task wrapping one step of the driver (:class:`~autobuild_core.driver.AutoBuild`),
persisted in the run directory keyed by its inputs; every evaluation lands in the store. Rerunning
a killed run with the same config and run directory resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from prefect import flow
from prefect.runtime import flow_run

from autobuild_core.driver import AutoBuild
from autobuild_core.target import compile_target
from search_spaces import get_space
from tasks.config import RunConfig, config_from
from tasks.layout import RunLayout
from tasks.preflight import preflight
from evaluators import partial_table_archs
from evaluators.calibration import CalibrationError, should_calibrate
from tasks.stages import (build_prune_task, calibrate_task, calibrated_config, sample_seeds, score_units_task, search_task,
                          train_ranker_task, value_of, winners_task)

from .evaluate import Evaluations
from .record import RunRecorder


class RunObjective:
    """The run's objective for the driver: architectures -> objective tuples, through the store."""

    def __init__(self, cfg: RunConfig, evals: Evaluations):
        self.evals, self.objectives = evals, cfg.objectives()
        self.fns = [compile_target(o.expr) for o in self.objectives]
        self.directions = tuple(o.direction for o in self.objectives)
        self.names = [o.expr for o in self.objectives]

    def values(self, rec) -> tuple | None:
        vals = None if rec is None or not rec.ok else [value_of(f, rec.metrics) for f in self.fns]
        return None if vals is None or any(v is None for v in vals) else tuple(vals)

    def __call__(self, archs: list, subflow: bool = False) -> list:
        return [self.values(r) for r in self.evals(archs, subflow=subflow)]

    def evaluate(self, archs: list, source: str, history: list) -> list:
        """Evaluate ``archs`` as one batch (a subflow) and append them to ``history``."""
        known = {self.evals.evaluator.record_key(self.evals.space, r["arch"]) for r in history}
        new = [a for a in archs if self.evals.evaluator.record_key(self.evals.space, a) not in known]
        for a, v in zip(new, self(new, subflow=True) if new else []):
            history.append({"arch": a, "values": v, "n_eval": len(history) + 1, "source": source})
        return history


def calibration_runner(cfg: RunConfig, layout: RunLayout, space):
    """Calibration trainings go where the run's evaluations go (a subflow, or the ``gpu`` pool's
    deployment), into the run's store; returns the fingerprint their records carry."""
    def run(space_name: str, settings: dict, natives: list, seed: int) -> str:
        evals = Evaluations(cfg, layout, space, settings=settings, seed=seed)
        evals([space.parse(a) for a in natives])
        return evals.evaluator.fingerprint()

    return run


def run_name() -> str:
    """Flow-run name: the config's name and space."""
    p = flow_run.parameters or {}
    c = p.get("config") or {}
    return f"{c.get('name') or Path(str(p.get('config_file') or 'autobuild')).stem}-{c.get('space') or 'run'}"


@flow(name="autobuild", flow_run_name=run_name, validate_parameters=True)
def autobuild(config: Optional[dict[str, Any]] = None, run_dir: str = "runs/autobuild", config_file: Optional[str] = None) -> dict:
    """AutoBuild end to end; returns the summary (also written to ``<run_dir>/summary.json``).

    Args:
        config: the run config (:class:`~tasks.config.RunConfig` fields), whole or the keys that
            differ from ``config_file``.
        run_dir: the run directory; rerunning with the same one resumes.
        config_file: a YAML config to start from (e.g. ``configs/quickstart.yaml``).
    """
    cfg = config_from(config, config_file)
    preflight(cfg, run_dir)  # API-triggered runs skip the CLI's check; still fail before writing anything
    layout = RunLayout.of(cfg, run_dir).create()
    layout.config.write_text(cfg.model_dump_json(indent=1), encoding="utf-8")
    space = get_space(cfg.space)
    rec = RunRecorder(cfg, layout, [o.expr for o in cfg.objectives()])
    try:
        if should_calibrate(cfg.evaluator.kind, cfg.calibration):
            with rec.stage("calibrate"):
                cal = calibrate_task(cfg, layout, space, runner=calibration_runner(cfg, layout, space),
                                     on_budget=rec.calibration_run())
                rec.calibration(cal)
                if not cal.ok:
                    raise CalibrationError(cal.message, cal)
                cfg = calibrated_config(cfg, cal)
                rec.calibrated(cfg)
        evals = Evaluations(cfg, layout, space)
        objective = RunObjective(cfg, evals)
        only = partial_table_archs(evals.evaluator, space)  # a table holding part of the space: search its rows alone
        ab = AutoBuild(space, objective, cfg.settings(), objective.directions, cfg.seed,
                       key=lambda a: evals.evaluator.record_key(space, a), only=only)
        if only is not None:
            rec.table_subset(len(only))
        with rec.stage("sample"):
            seeds, sdir = sample_seeds(ab, cfg, layout, evals.evaluator)
        with rec.stage("evaluate"):
            history = objective.evaluate(seeds, "seed", [])
            evals.check_failures("seed evaluation")
            rec.seeds(history, evals)
        train_archs = ab.training_set(history)[0]
        if ab.skips_seed_ranker(len(train_archs)):  # too few seeds succeeded; the iterative search trains its own rankers
            bp, bkey = {"built": [], "pruned": None}, "no-seed-ranker"
            rec.no_seed_ranker(len(train_archs), len(history))
        else:
            with rec.stage("train_ranker"):
                trained, info, rdir = train_ranker_task(ab, cfg, layout, history, on_epoch=rec.ranker_run())
                rec.ranker(info, rdir, [space.format(a) for a in train_archs[:5]])
            with rec.stage("score"):
                scores, importance, sdir = score_units_task(ab, cfg, layout, trained, rdir, train_archs)
                rec.scores(scores, importance, sdir)
            with rec.stage("build_prune"):
                bp, bdir = build_prune_task(ab, cfg, layout, scores, importance, sdir, cfg.search.budget - len(history))
                history = objective.evaluate([space.parse(a) for a in bp["built"]], "built", history)
                rec.built(bp, bdir, history, space)
            bkey = bdir.name
        if cfg.search.enabled and len(history) < cfg.search.budget:
            with rec.stage("search"):
                on_trial, on_round = rec.search_run()
                res, qdir = search_task(ab, cfg, layout, history, bp["pruned"], bkey, on_trial, on_round)
                evals([space.parse(h["arch"]) for h in res["history"]], subflow=False)  # a reloaded search still counts
                evals.check_failures("search")
                rec.search(res, qdir)
        with rec.stage("winners"):
            final = cfg.final_evaluator_settings()
            same = final == dict(cfg.evaluator.settings) and cfg.winners.seed == cfg.seed
            final_evals = evals if same else Evaluations(cfg, layout, space, settings=final, seed=cfg.winners.seed)
            winners = winners_task(cfg, evals, final_evals, compile_target(cfg.target), objective.fns, objective.directions)
            rec.winners(winners, final, None if same else final_evals.counts())
    except BaseException as e:
        rec.finish(error=e)
        raise
    return rec.finish()
