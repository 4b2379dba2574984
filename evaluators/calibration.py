"""Calibrate the training protocol before the seed budget is spent: do its labels rank?

A training budget too short for the space gives labels whose seed-to-seed noise exceeds the
spread between architectures, and a ranker trained on them learns noise. So a few architectures
spread over the space (stratified sample) are trained at two seeds at a few candidate budgets
(epochs x training images), cheapest first; the repeat agreement (Spearman between the seeds and
the noise ceiling of :mod:`evaluators.noise`) is measured per budget, and the cheapest budget whose
ceiling reaches the threshold is chosen. If none does within the cost cap, :class:`CalibrationError`
says what was measured and extrapolates what a budget that ranks would cost. Every training goes
through the :class:`~evaluators.store.EvaluationStore`, so a killed calibration resumes.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from search_spaces.errors import AutoBuildError, ConfigError

from .base import parse_all, space_of
from .noise import noise_report
from .store import EvaluationStore, evaluate_archs

__all__ = [
    "CalibrationBudget", "CalibrationSettings", "CalibrationResult", "CalibrationError", "CalibratedSettings",
    "calibrate", "apply_calibration", "distinct_sample", "should_calibrate", "TRAINING_KINDS",
]

#: evaluator kinds calibration applies to (on by default for them)
TRAINING_KINDS = ("train", "training")


class CalibrationBudget(BaseModel):
    """One candidate training budget: ``epochs`` over ``n_train`` training images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(..., ge=1, description="Training epochs.")
    n_train: Optional[int] = Field(..., ge=2, description="Training images per epoch; null = the whole training split.")

    @model_validator(mode="before")
    @classmethod
    def _pair(cls, data: Any) -> Any:
        if isinstance(data, (list, tuple)) and len(data) == 2:  # [epochs, n_train] shorthand
            return {"epochs": data[0], "n_train": data[1]}
        if isinstance(data, str) and "x" in data:  # "3x25000" shorthand ("3xall" = whole split)
            e, n = data.lower().split("x", 1)
            return {"epochs": e, "n_train": None if n in ("all", "none", "") else n}
        return data

    def label(self) -> str:
        return f"{self.epochs}x{self.n_train if self.n_train is not None else 'all'}"

    def images(self, full: int) -> int:
        """Training images seen (the cost unit): epochs x n_train (``full`` when n_train is null)."""
        return self.epochs * (full if self.n_train is None else min(self.n_train, full))


_DEFAULT_BUDGETS = [(1, 10000), (3, 25000), (6, 25000), (10, None), (20, None)]


class CalibrationSettings(BaseModel):
    """How the training protocol is calibrated (one section of a run's configuration)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Calibrate before the seeds are evaluated; on by default for the training evaluator, ignored by table evaluators.")
    n_archs: int = Field(12, ge=3, description="Architectures trained per budget and seed (stratified sample of the space). The Spearman of n pairs has a standard error of roughly 1/sqrt(n-3): more architectures give a surer verdict.")
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=2, max_length=2, description="The two training seeds whose results are compared.")
    budgets: list[CalibrationBudget] = Field(default_factory=lambda: [CalibrationBudget(epochs=e, n_train=n) for e, n in _DEFAULT_BUDGETS],
                                             min_length=1, description="Candidate budgets ([epochs, n_train] pairs, or 'EPOCHSxN'); tried cheapest first (by epochs x images).")
    threshold: float = Field(0.8, gt=0, le=1, description="Noise ceiling (sqrt of the Spearman between seeds) a budget must reach to be chosen.")
    metric: str = Field("val_acc", description="Metric whose repeat agreement is measured (the run's target, normally).")
    max_seconds: Optional[float] = Field(3600.0, gt=0, description="Cost cap: evaluation seconds (summed over trainings, not wall clock) the calibration may spend; a budget predicted to exceed it is not trained. null = no cap.")
    max_seconds_per_arch: Optional[float] = Field(None, gt=0, description="Cost cap per architecture: a budget whose (predicted or measured) seconds per training exceed this is neither trained nor chosen. null = no cap.")
    stratified: bool = Field(True, description="Stratified sample (every unit depth and layer choice covered evenly) instead of uniform.")
    sample_seed: int = Field(0, description="Seed of the architecture sample.")
    probe_precision: bool = Field(True, description="Resolve the precision/memory format once on the space's own networks (probe) and apply the choice to every budget and to the run.")

    @field_validator("budgets")
    @classmethod
    def _distinct(cls, v):
        labels = [b.label() for b in v]
        if len(set(labels)) != len(labels):
            raise ValueError(f"candidate budgets must be distinct, got {labels}")
        return v

    @field_validator("seeds")
    @classmethod
    def _two_seeds(cls, v):
        if v[0] == v[1]:
            raise ValueError(f"the two seeds must differ, got {v}")
        return v


class CalibrationError(AutoBuildError):
    """No candidate budget ranks within the cost cap; ``result`` holds what was measured."""

    def __init__(self, message: str, result: "CalibrationResult"):
        super().__init__(message)
        self.result = result

    def __reduce__(self):  # picklable with its result (Prefect and process pools pickle exceptions)
        return (type(self), (str(self), self.result))


class CalibrationResult(BaseModel):
    """What calibration measured and chose; :meth:`to_dict` is JSON (NaN written as null)."""

    space: str
    metric: str
    threshold: float
    status: str = Field(description="'chosen', 'no_budget_ranks' or 'disabled'.")
    chosen: Optional[CalibrationBudget] = None
    ceiling: Optional[float] = Field(None, description="Noise ceiling of the chosen budget.")
    spearman: Optional[float] = Field(None, description="Spearman between seeds of the chosen budget.")
    fingerprint: Optional[str] = Field(None, description="Evaluator fingerprint of the chosen budget (its records in the store).")
    seconds: float = Field(0.0, description="Evaluation seconds of every calibration training (summed, as measured when trained).")
    wall_seconds: float = Field(0.0, description="Wall clock of this call (near 0 when everything was reused).")
    new: int = Field(0, description="Trainings run by this call (0 on a rerun).")
    reused: int = Field(0, description="Trainings answered from the store.")
    budgets: list[dict] = Field(default_factory=list, description="One row per budget measured, cheapest first.")
    skipped: list[dict] = Field(default_factory=list, description="Budgets not trained (cost cap), with the predicted cost.")
    extrapolation: dict = Field(default_factory=dict, description="What a budget that ranks would cost (when none did).")
    precision: Optional[dict] = Field(None, description="The precision choice applied to every budget (PrecisionChoice.to_dict()).")
    n_archs: int = 0
    seeds: list[int] = Field(default_factory=list)
    archs: list = Field(default_factory=list, description="The calibration architectures (native encodings).")
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "chosen"

    def to_dict(self) -> dict:
        return _clean(self.model_dump(mode="json"))

    def summary(self) -> str:
        return self.message

    def table(self) -> str:
        """The per-budget figures as a Markdown table."""
        lines = ["| budget | images | Spearman between seeds | ceiling | ok pairs | s/arch | seconds |", "|---|---|---|---|---|---|---|"]
        for r in self.budgets:
            lines.append(f"| {r['budget']} | {r['images']:,} | {_fmt(r['spearman'])} | {_fmt(r['ceiling'])} | {r['n_pairs']} | "
                         f"{_fmt(r['seconds_per_arch'], 2)} | {_fmt(r['seconds'], 1)} |")
        return "\n".join(lines)


class CalibratedSettings(NamedTuple):
    """Evaluator settings with the chosen budget applied, and the winners' final-training overrides."""

    evaluator: dict
    winners: dict


def should_calibrate(kind: str, settings: CalibrationSettings | dict | None) -> bool:
    """Whether a run with evaluator ``kind`` calibrates (on by default for the training evaluator)."""
    s = settings if isinstance(settings, CalibrationSettings) else CalibrationSettings(**(settings or {}))
    return bool(s.enabled) and kind in TRAINING_KINDS


def _fmt(v, nd: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _spearman_interval(r: float, n: int, z: float = 1.645) -> tuple[float | None, float | None]:
    """Approximate 90% interval of a Spearman of ``n`` pairs (Fisher z, SE = 1.06/sqrt(n-3))."""
    if not _finite(r) or n < 4:
        return None, None
    r = max(min(r, 0.999999), -0.999999)
    c, se = math.atanh(r), 1.06 / math.sqrt(n - 3)
    return math.tanh(c - z * se), math.tanh(c + z * se)


def _extrapolate(rows: list[dict], threshold: float, full: int) -> dict:
    """What a budget that ranks would cost, from the measured rows.

    Two estimates: (1) Spearman-Brown: under the classical noise model, averaging k independent
    repeats of the most reliable budget raises its repeat agreement r to k r / (1 + (k-1) r); the
    k that reaches threshold**2 costs k x its seconds per architecture. (2) A trend: the repeat
    Spearman against log(training images) over the measured budgets, extended to threshold**2.
    """
    target = threshold ** 2
    out: dict = {"target_spearman": target}
    good = [r for r in rows if _finite(r["spearman"]) and r["n_pairs"] >= 3]
    if not good:
        out["note"] = "no budget gave a finite repeat Spearman (failed trainings or constant accuracy): nothing to extrapolate from"
        return out
    best = max(good, key=lambda r: (r["spearman"], r["images"]))
    r = best["spearman"]
    if r > 0:
        k = target * (1 - r) / (r * (1 - target)) if target < 1 else float("inf")
        out["spearman_brown"] = {"from_budget": best["budget"], "repeats": k, "seconds_per_arch": k * best["seconds_per_arch"],
                                 "images": k * best["images"]}
    else:
        out["spearman_brown"] = {"from_budget": best["budget"], "note": "repeat Spearman <= 0: no amount of repetition is predicted to rank"}
    if len(good) >= 2:
        x = np.log([g["images"] for g in good])
        y = np.array([g["spearman"] for g in good])
        if np.ptp(x) > 0:
            slope, icpt = np.polyfit(x, y, 1)
            if slope > 0:
                images = float(math.exp((target - icpt) / slope))
                spi = [g["seconds_per_arch"] / g["images"] for g in good if g["images"] > 0]
                sec = images * float(np.median(spi)) if spi else None
                epochs = max(1, math.ceil(images / full))
                out["trend"] = {"images": images, "seconds_per_arch": sec, "slope_per_log_images": float(slope),
                                "suggested": {"epochs": epochs, "n_train": None if images >= full else int(math.ceil(images / epochs))}}
            else:
                out["trend"] = {"slope_per_log_images": float(slope), "note": "agreement did not improve with the budget over the measured range"}
    return out


def _message(res: "CalibrationResult", n_arch: int) -> str:
    if res.status == "chosen":
        row = next(r for r in res.budgets if r["budget"] == res.chosen.label())
        return (f"calibration: chose {res.chosen.label()} (epochs x training images) for {res.space}: ceiling {_fmt(res.ceiling)} >= "
                f"{res.threshold} on {res.metric} (Spearman between seeds {_fmt(res.spearman)}, {row['n_pairs']} architectures, "
                f"{_fmt(row['seconds_per_arch'], 1)} s per training); calibration spent {res.seconds:.0f} evaluation seconds "
                f"({res.new} new trainings, {res.reused} reused).")
    parts = [f"calibration: no candidate budget gives labels that rank {res.space} architectures on {res.metric} "
             f"(noise ceiling >= {res.threshold}) within the cost cap. Measured ({n_arch} architectures x seeds {res.seeds}):"]
    for r in res.budgets:
        parts.append(f"  {r['budget']}: ceiling {_fmt(r['ceiling'])} (Spearman between seeds {_fmt(r['spearman'])}, {r['n_pairs']} pairs, "
                     f"{r['failed']} failed), {_fmt(r['seconds_per_arch'], 1)} s per training, {_fmt(r['seconds'], 0)} s in all")
    for s in res.skipped:
        parts.append(f"  {s['budget']}: not trained, predicted {_fmt(s['predicted_seconds'], 0)} s ({s['reason']})")
    ex = res.extrapolation
    sb = ex.get("spearman_brown") or {}
    if "repeats" in sb:
        k = max(2, math.ceil(sb["repeats"]))  # whole repeats; one repeat is the budget already measured
        per = sb["seconds_per_arch"] / sb["repeats"] if sb["repeats"] > 0 else 0.0
        parts.append(f"Extrapolated: averaging {k} repeats of {sb['from_budget']} (k = {sb['repeats']:.2f} by Spearman-Brown; about "
                     f"{k * per:.0f} s per architecture) would reach the ceiling under the classical noise model.")
    tr = ex.get("trend") or {}
    if "images" in tr:
        sug = tr["suggested"]
        parts.append(f"The trend over the measured budgets reaches it at about {tr['images']:,.0f} training images "
                     f"(e.g. {sug['epochs']} epochs x {sug['n_train'] or 'all'} images, about "
                     f"{_fmt(tr['seconds_per_arch'], 0)} s per architecture).")
    elif tr.get("note") or ex.get("note") or sb.get("note"):
        parts.append("Extrapolation: " + "; ".join(v for v in (ex.get("note"), sb.get("note"), tr.get("note")) if v) + ".")
    parts.append("Add a longer budget to calibration.budgets, raise calibration.max_seconds, lower calibration.threshold "
                 "(knowing the labels are noisier), or set calibration.enabled=false to run with the configured budget.")
    return "\n".join(parts)


def calibrate(
    space,
    evaluator_settings: dict,
    store: EvaluationStore,
    settings: CalibrationSettings | dict | None = None,
    *,
    retries: int = 2,
    progress: bool = False,
    runner: Callable[[str, dict, list, int], Optional[str]] | None = None,
    on_budget: Callable[[dict], None] | None = None,
    raise_on_failure: bool = True,
) -> CalibrationResult:
    """Measure how well repeat trainings agree at each candidate budget and choose the cheapest that ranks.

    Args:
        space: a search space or its registered name.
        evaluator_settings: the run's training-evaluator settings (``TrainingEvaluator`` keyword
            arguments); each candidate budget overrides ``epochs`` and ``n_train``.
        store: evaluation store; calibration records are stored under each budget's fingerprint
            like any other and reused on rerun.
        settings: :class:`CalibrationSettings` (or a dict of its fields); defaults if None.
        retries: retries of transient failures per training (in-process evaluation).
        progress: show progress bars.
        runner: optional ``runner(space_name, settings, archs_native, seed)`` that evaluates the
            architectures into ``store`` elsewhere (worker processes, a GPU work pool) and returns
            the fingerprint its records carry (or None: this process's evaluator fingerprint is
            used to read them back).
        on_budget: called with each budget's row as soon as it is measured (for live logging).
        raise_on_failure: raise :class:`CalibrationError` when no budget ranks (else return the
            result with ``status='no_budget_ranks'``).
    """
    from .training import TrainingEvaluator

    cs = settings if isinstance(settings, CalibrationSettings) else CalibrationSettings(**(settings or {}))
    space = space_of(space)
    t_call = time.perf_counter()
    if not cs.enabled:
        return CalibrationResult(space=space.name, metric=cs.metric, threshold=cs.threshold, status="disabled",
                                 message="calibration disabled (calibration.enabled=false): the configured budget is used as is")
    base = dict(evaluator_settings or {})
    archs = distinct_sample(space, cs.n_archs, cs.sample_seed, cs.stratified)
    natives = [space.format(a) for a in archs]

    first = TrainingEvaluator(**base)
    precision = None
    if cs.probe_precision:
        first.probe_space = first.probe_space or space.name
        precision = first.precision_choice()
        if precision.source in ("probe", "table"):  # one measured choice for every budget (and the run)
            base.update(precision.settings())
    full = len(TrainingEvaluator(**{**base, "n_train": None}).data().train_y)
    order = sorted(cs.budgets, key=lambda b: (b.images(full), b.epochs))

    res = CalibrationResult(space=space.name, metric=cs.metric, threshold=cs.threshold, status="no_budget_ranks",
                            precision=precision.to_dict() if precision else None, n_archs=len(archs), seeds=list(cs.seeds),
                            archs=natives)
    cost = None  # (fixed seconds per training, seconds per training image), from the latest budget

    def over_cap(images: int) -> tuple[float, str | None]:
        per_arch = cost[0] + cost[1] * images
        total = res.seconds + per_arch * len(archs) * 2
        if cs.max_seconds is not None and total > cs.max_seconds:
            return per_arch, f"would bring calibration to {total:.0f} s > max_seconds={cs.max_seconds:g}"
        if cs.max_seconds_per_arch is not None and per_arch > cs.max_seconds_per_arch:
            return per_arch, f"{per_arch:.1f} s per training > max_seconds_per_arch={cs.max_seconds_per_arch:g}"
        return per_arch, None

    for b in order:
        images = b.images(full)
        if cost is not None and over_cap(images)[1]:
            # later budgets cost more still: record them all as skipped, each with its own prediction
            for bb in order[order.index(b):]:
                pa, why = over_cap(bb.images(full))
                res.skipped.append({"budget": bb.label(), "epochs": bb.epochs, "n_train": bb.n_train, "images": bb.images(full),
                                    "predicted_seconds": pa * len(archs) * 2, "predicted_seconds_per_arch": pa, "reason": why})
            break
        row = _measure(space, archs, natives, {**base, "epochs": b.epochs, "n_train": b.n_train}, store, cs, retries, progress, runner)
        row.update({"budget": b.label(), "epochs": b.epochs, "n_train": b.n_train, "images": images})
        res.budgets.append(row)
        res.seconds += row["seconds"]
        res.new += row["new"]
        res.reused += row["reused"]
        if on_budget is not None:
            on_budget(dict(row))
        if row["n_ok"]:
            # the training loop scales with the images; building, evaluation and FLOP counting do not
            fixed = max(row["seconds_per_arch"] - row["train_seconds_per_arch"], 0.0)
            cost = (fixed, row["train_seconds_per_arch"] / max(images, 1))
        per_arch_ok = cs.max_seconds_per_arch is None or row["seconds_per_arch"] <= cs.max_seconds_per_arch
        if _finite(row["ceiling"]) and row["ceiling"] >= cs.threshold and per_arch_ok:
            res.status = "chosen"
            res.chosen, res.ceiling, res.spearman, res.fingerprint = b, row["ceiling"], row["spearman"], row["fingerprint"]
            break
    res.wall_seconds = time.perf_counter() - t_call
    if res.status != "chosen":
        res.extrapolation = _extrapolate(res.budgets, cs.threshold, full)
    res.message = _message(res, len(archs))
    if res.status != "chosen" and raise_on_failure:
        raise CalibrationError(res.message, res)
    return res


def distinct_sample(space, n: int, seed: int, stratified: bool, tries: int = 20) -> list:
    """``n`` distinct architectures of ``space`` (a repeated architecture would count twice in the
    Spearman): the sample, topped up from further seeds; fewer only when the space is that small."""
    seen: dict[str, Any] = {}
    for t in range(tries):
        for a in parse_all(space, space.sample(n, seed=seed + 7919 * t, stratified=stratified and t == 0)):
            seen.setdefault(json.dumps(space.format(a), sort_keys=True, default=str), a)
            if len(seen) == n:
                return list(seen.values())
    return list(seen.values())


def _measure(space, archs, natives, ev_settings: dict, store, cs: CalibrationSettings, retries, progress, runner) -> dict:
    """Train the calibration architectures at both seeds with one budget; its row of figures."""
    from .training import TrainingEvaluator

    ev = TrainingEvaluator(**ev_settings)
    fp = ev.fingerprint()
    keys = [ev.record_key(space, a) for a in archs]
    t0 = time.perf_counter()
    per_seed, new, reused = [], 0, 0
    for seed in cs.seeds:
        if runner is None:
            out = evaluate_archs(ev, space, archs, store, seed=seed, retries=retries, progress=progress)
            recs, new, reused = out.records, new + out.new, reused + out.reused
        else:
            before = store.get_many(space.name, keys, fp, seed)
            got_fp = runner(space.name, ev.config(), natives, seed) or fp
            if got_fp != fp:
                fp = got_fp
            got = store.get_many(space.name, keys, fp, seed)
            recs = [got.get(k) for k in keys]
            n_before = sum(1 for k in set(keys) if k in before and before[k].ok)
            reused += n_before
            new += len(set(keys)) - n_before
        per_seed.append(recs)
    wall = time.perf_counter() - t0
    a, b = per_seed
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and x.ok and y.ok
             and _finite(x.metrics.get(cs.metric)) and _finite(y.metrics.get(cs.metric))]
    all_recs = [r for r in a + b if r is not None]
    n_ok = sum(1 for r in all_recs if r.ok)
    missing = [r for r in all_recs if r.ok and cs.metric not in r.metrics]
    if missing:
        raise ConfigError(f"calibration metric {cs.metric!r} is not among the training metrics {sorted(missing[0].metrics)}")
    rep = noise_report([p[0].metrics[cs.metric] for p in pairs], [p[1].metrics[cs.metric] for p in pairs], metric=cs.metric)
    lo, hi = _spearman_interval(rep.spearman_repeat, rep.n)
    seconds = float(sum(r.seconds for r in all_recs))
    train_s = [r.metrics["train_seconds"] for r in all_recs if r.ok and "train_seconds" in r.metrics]
    errors = sorted({(r.error or "").splitlines()[0] for r in all_recs if not r.ok})[:3]
    means = [(p[0].metrics[cs.metric] + p[1].metrics[cs.metric]) / 2 for p in pairs]
    return {
        "fingerprint": fp,
        "n_pairs": rep.n,
        "n_ok": n_ok,
        "failed": len(all_recs) - n_ok,
        "errors": errors,
        "spearman": rep.spearman_repeat,
        "spearman_90": [lo, hi],
        "ceiling": rep.spearman_ceiling,
        "pearson": rep.pearson_repeat,
        "noise_sd": rep.sd_within,
        "sd_across": rep.sd_across,
        "mean_abs_diff": rep.mean_abs_diff,
        "metric_mean": float(np.mean(means)) if means else None,
        "seconds": seconds,
        "seconds_per_arch": seconds / max(len(all_recs), 1),
        "train_seconds_per_arch": float(np.mean(train_s)) if train_s else seconds / max(len(all_recs), 1),
        "wall_seconds": wall,
        "new": new,
        "reused": reused,
    }


def apply_calibration(evaluator_settings: dict, result: CalibrationResult | dict,
                      winners_overrides: dict | None = None) -> CalibratedSettings:
    """The run's evaluator settings with the calibrated budget, and the winners' final-training overrides.

    Args:
        evaluator_settings: the run's training-evaluator settings (``evaluator.settings``).
        result: a :class:`CalibrationResult` (or its ``to_dict()``) with status ``chosen``;
            ``disabled`` returns the settings unchanged.
        winners_overrides: the run's ``winners.evaluator_settings`` (overrides of the evaluator
            settings for the final training).

    Returns ``CalibratedSettings(evaluator, winners)``: ``evaluator`` has the chosen ``epochs`` and
    ``n_train`` (and the probed precision/memory format, when one was measured); ``winners`` is
    ``winners_overrides`` with explicit ``epochs`` and ``n_train``, raised where needed so the final
    training is at least as long as the chosen budget (``n_train`` null = the whole split, longest).
    """
    r = result if isinstance(result, CalibrationResult) else CalibrationResult(**result)
    ev = dict(evaluator_settings or {})
    win = dict(winners_overrides or {})
    if r.status == "disabled":
        return CalibratedSettings(ev, win)
    if r.status != "chosen" or r.chosen is None:
        raise ConfigError(f"apply_calibration needs a calibration that chose a budget; this one ended {r.status!r}: {r.message}")
    ev["epochs"], ev["n_train"] = r.chosen.epochs, r.chosen.n_train
    if r.precision and r.precision.get("source") in ("probe", "table"):
        ev["amp"] = "off" if r.precision["precision"] == "fp32" else r.precision["precision"]
        ev["channels_last"] = bool(r.precision["channels_last"])
    # explicit in the overrides, so they hold whichever base settings the caller merges them into
    win["epochs"] = max(int(win.get("epochs", r.chosen.epochs)), r.chosen.epochs)
    n_win = win.get("n_train", r.chosen.n_train)
    win["n_train"] = None if n_win is None or r.chosen.n_train is None else max(int(n_win), r.chosen.n_train)
    return CalibratedSettings(ev, win)
