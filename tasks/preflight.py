"""Checks of a run's inputs before anything starts or is written.

Every name, path and expression in a :class:`~tasks.config.RunConfig` is resolved here,
and the artefacts a resumed run would reload from its run directory (the evaluation store, stage
outputs, saved rankers) are opened, so that a mistake is reported as one paragraph naming the
field (or file) and what to do *before* the Prefect server starts, the run directory is created,
or any file in it is replaced. Without this, the same mistakes surfaced minutes later inside the
flow, after ``config.json``, ``summary.json`` and the MLflow store had already been written.

No Prefect or MLflow imports: the CLI calls :func:`preflight` before importing them, and the flow
calls it again first thing (runs triggered through the API never pass the CLI).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tasks.config import RunConfig
from tasks.layout import RunLayout
from search_spaces.errors import AutoBuildError, CheckpointError, ConfigError, UnknownNameError

__all__ = ["preflight", "check_run_dir"]


def _prefixed(field: str, exc: AutoBuildError) -> AutoBuildError:
    """The same error type with the config field it concerns in front, so the user knows where to fix it."""
    new = type(exc).__new__(type(exc))
    new.__dict__.update(exc.__dict__)  # keeps e.g. UnknownNameError.suggestions
    Exception.__init__(new, f"{field}: {exc}")
    return new


def preflight(cfg: RunConfig, run_dir: str | os.PathLike | None = None) -> None:
    """Raise an :class:`AutoBuildError` naming the field to fix if the run cannot work as configured.

    Checks, in the order a user would want to hear about them: the space name, the target and
    objective expressions (syntax, forbidden constructs), the evaluator kind and settings (which
    opens and validates tables), the metric names the expressions use, whether ``seeds.n`` can
    train a ranker, and, if ``run_dir`` exists, every artefact a resumed run reloads from it.
    """
    from search_spaces import get_space

    from evaluators import get_evaluator
    from autobuild_core.target import compile_target

    try:
        get_space(cfg.space)
    except AutoBuildError as e:
        raise _prefixed("space", e) from None

    exprs = [("target", cfg.target)] + [(f"search.objectives[{i}].expr", o.expr) for i, o in enumerate(cfg.search.objectives)]
    compiled = []
    for field, text in exprs:
        try:
            compiled.append((field, compile_target(text)))
        except AutoBuildError as e:
            raise _prefixed(field, e) from None

    evaluators = [("evaluator", cfg.evaluator.settings)]
    if cfg.winners.top > 0 and cfg.winners.evaluator_settings:
        evaluators.append(("winners.evaluator_settings", cfg.final_evaluator_settings()))
    for field, settings in evaluators:
        try:
            ev = get_evaluator(cfg.evaluator.kind, **dict(settings))
        except AutoBuildError as e:
            unknown_kind = isinstance(e, UnknownNameError) and e.kind == "evaluator"
            where = "evaluator.kind" if unknown_kind else "evaluator.settings" if field == "evaluator" else field
            raise _prefixed(where, e) from None
        available = ev.metric_names()
        if available is not None:
            for efield, target in compiled:
                try:
                    target.check_names(available)
                except AutoBuildError as e:
                    raise _prefixed(efield, e) from None

    from autobuild_core.train import MIN_TRAINING_ARCHS  # imports torch: only once the cheap checks passed

    n_val = int(round(cfg.seeds.n * cfg.train.val_fraction))
    if cfg.seeds.n - n_val < MIN_TRAINING_ARCHS:
        need = MIN_TRAINING_ARCHS
        while need - int(round(need * cfg.train.val_fraction)) < MIN_TRAINING_ARCHS:
            need += 1
        raise ConfigError(
            f"seeds.n={cfg.seeds.n} is too few seed evaluations to train a ranker: at least {MIN_TRAINING_ARCHS} must remain "
            f"after the train.val_fraction={cfg.train.val_fraction:g} validation split, so set seeds.n to {need} or more "
            "(a few hundred for a useful ranker).")

    if cfg.search.objectives and cfg.search.objectives[0].expr != cfg.target:
        raise ConfigError(f"search.objectives[0].expr={cfg.search.objectives[0].expr!r} differs from target={cfg.target!r}: the "
                          "ranker learns the first objective, so set target to it (or list the target first).")
    from autobuild_core.search import get_strategy

    try:
        get_strategy(cfg.search.method)
    except AutoBuildError as e:
        raise _prefixed("search.method", e) from None
    spent = cfg.seeds.n + (cfg.build.n if cfg.build.enabled else 0)
    if cfg.search.enabled and cfg.search.budget <= spent:
        raise ConfigError(f"search.budget={cfg.search.budget} counts every evaluation of the run, but the seeds and built "
                          f"architectures alone take {spent}: raise search.budget above {spent} or lower seeds.n.")

    if run_dir is not None and Path(run_dir).is_dir():
        check_run_dir(cfg, run_dir)


def check_run_dir(cfg: RunConfig, run_dir: str | os.PathLike) -> None:
    """Open what a rerun in ``run_dir`` would reload, read-only, and name any damaged file.

    A damaged store or stage output otherwise fails deep inside the flow with a library error;
    here it becomes one message saying which file to move aside and what is lost by doing so
    (stage outputs are recomputed from stored evaluations; store records are not).
    """
    layout = RunLayout.of(cfg, run_dir)
    if layout.store.exists():
        from evaluators import EvaluationStore

        with EvaluationStore(layout.store) as st:  # raises CheckpointError naming the file and the remedy
            len(st)
    for sd in layout.finished_stages():
        remedy = f"Delete {sd} (`rm -r {sd}`) and rerun: that stage is recomputed from the stored evaluations."
        for f in sorted(sd.glob("*.json")):
            try:
                json.loads(f.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise CheckpointError(f"Stage output {f} is corrupted ({type(e).__name__}: {e}). {remedy}") from None
        if sd.name.startswith("ranker-"):
            from autobuild_core.train import TrainedRanker

            try:
                TrainedRanker.load(sd / "ranker")
            except CheckpointError as e:
                why = str(e).removesuffix(" Retrain the ranker.")
                raise CheckpointError(f"The saved ranker of this run is unusable: {why} {remedy}") from None
