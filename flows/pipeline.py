"""The `autobuild` flow: sample -> evaluate -> train ranker -> score -> build/prune -> search -> winners.

One validated :class:`~tasks.config.RunConfig` is the flow's parameter. Every stage's
output is persisted in the run directory keyed by its inputs, and every evaluation in the store,
so rerunning a killed run with the same config and run directory resumes where it stopped.
MLflow: one parent run per flow run, child runs for the ranker, scoring, each search and each
winner (see :mod:`flows.tracking`). The run ends by writing ``<run dir>/summary.json`` and Prefect
artifacts (Markdown summary + winners table).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import traceback
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from tasks.config import RunConfig
from tasks.common import get_space, make_evaluator, optuna_url, store_path, write_json_atomic
from tasks.stages import (
    build_prune_task,
    evaluate_remote,
    lookup_records,
    sample_seeds,
    score_units_task,
    search_task,
    train_ranker_task,
)

from .evaluate import evaluate_batch
from .tracking import Tracker, plot_hops, plot_search, plot_training, plot_unit_scores


class Evaluations:
    """Evaluates architectures for the run (in-process subflow, direct call, or a deployment) and
    keeps the run's tally over distinct architectures: new, reused, failed."""

    def __init__(self, cfg: RunConfig, run_dir: Path, settings: dict | None = None, seed: int | None = None):
        self.cfg, self.run_dir = cfg, run_dir
        self.kind = cfg.evaluator.kind
        self.settings = dict(cfg.evaluator.settings if settings is None else settings)
        self.seed = cfg.seed if seed is None else seed
        self.store = str(store_path(cfg, run_dir))
        self.space = get_space(cfg.space)
        self.evaluator = make_evaluator(self.kind, self.settings)
        self.status: dict[str, str] = {}  # key -> new | reused
        self.records: dict[str, Any] = {}  # key -> (native, EvalRecord)

    def _keys(self, natives):
        return [self.evaluator.record_key(self.space, self.space.parse(a)) for a in natives]

    def __call__(self, natives: list, subflow: bool = True) -> list:
        if not natives:
            return []
        keys = self._keys(natives)
        before = lookup_records(self.cfg.space, natives, self.kind, self.settings, self.store, self.seed, self.evaluator)
        todo = [a for a, r in zip(natives, before) if r is None or (not r.ok and getattr(r, "transient", False))]
        for k, r in zip(keys, before):
            if r is not None and k not in self.status and not (not r.ok and getattr(r, "transient", False)):
                self.status[k] = "reused"
        if todo:
            ev = self.cfg.evaluator
            fail = self.cfg.failure
            params = dict(space=self.cfg.space, archs=todo, evaluator=self.kind, settings=self.settings, store=self.store,
                          seed=self.seed, retries=fail.retries, batch_size=ev.batch_size, concurrency=ev.concurrency,
                          tag=ev.tag, task_retries=fail.retries, retry_delay_s=fail.retry_delay_s)
            if ev.deployment:
                evaluate_remote.with_options(retries=fail.retries, retry_delay_seconds=fail.retry_delay_s)(
                    ev.deployment, params, ev.deployment_timeout_s)
            elif subflow:
                evaluate_batch(**params)
            else:
                from evaluators import EvaluationStore, evaluate_archs

                with EvaluationStore(self.store) as st:
                    evaluate_archs(self.evaluator, self.space, todo, st, seed=self.seed, retries=fail.retries, progress=False)
        after = lookup_records(self.cfg.space, natives, self.kind, self.settings, self.store, self.seed, self.evaluator)
        for k, a, r in zip(keys, natives, after):
            self.status.setdefault(k, "new")
            if r is not None:
                self.records[k] = (a, r)
        return after

    def counts(self) -> dict:
        failed = sum(1 for _, r in self.records.values() if not r.ok)
        return {"total": len(self.status), "new": sum(v == "new" for v in self.status.values()),
                "reused": sum(v == "reused" for v in self.status.values()), "failed": failed}

    def failures(self, limit: int = 5) -> list:
        return [{"arch": a, "error": (r.error or "").splitlines()[0] if r.error else ""} for a, r in self.records.values() if not r.ok][:limit]

    def check_failures(self, where: str) -> None:
        c = self.counts()
        if c["total"] and c["failed"] > self.cfg.failure.max_failure_fraction * c["total"]:
            from evaluators import EvaluationError

            raise EvaluationError(
                f"{where}: {c['failed']} of {c['total']} evaluations failed with {self.kind!r}, more than "
                f"failure.max_failure_fraction={self.cfg.failure.max_failure_fraction}. First failures: "
                f"{json.dumps(self.failures(), default=str)}. Every finished evaluation is stored; fix the cause "
                "(or raise the fraction) and rerun with the same --out to continue.")


def _value(fn, metrics: dict) -> float | None:
    try:
        v = float(fn(metrics))
    except Exception:
        return None
    return v if math.isfinite(v) else None


@contextlib.contextmanager
def _stage(times: dict, name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        times[name] = round(times.get(name, 0.0) + time.perf_counter() - t0, 3)


def _flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    except Exception:
        return None


@flow(name="autobuild", flow_run_name="{config.name}-{config.space}", validate_parameters=True)
def autobuild(config: RunConfig, run_dir: str = "runs/autobuild") -> dict:
    """AutoBuild end to end; returns the summary (also written to ``<run_dir>/summary.json``)."""
    from autobuild_core.target import compile_target

    from tasks.preflight import preflight

    cfg = config
    logger = get_run_logger()
    rd = Path(run_dir).resolve()
    preflight(cfg, rd)  # API-triggered runs skip the CLI's check; still fail before writing anything
    rd.mkdir(parents=True, exist_ok=True)
    (rd / "config.json").write_text(cfg.model_dump_json(indent=1), encoding="utf-8")
    times: dict[str, float] = {}
    t_start = time.perf_counter()
    tracker = Tracker(cfg.tracking, rd)
    parent = tracker.start(cfg.name, tags={"prefect.flow_run_id": _flow_run_id() or "", "autobuild.space": cfg.space,
                                           "autobuild.run_dir": str(rd)})
    parent.params(cfg.model_dump(mode="json"))
    summary: dict[str, Any] = {
        "status": "running", "name": cfg.name, "space": cfg.space,
        "evaluator": {"kind": cfg.evaluator.kind, "settings": cfg.evaluator.settings},
        "target": cfg.target, "run_dir": str(rd), "mlflow_run_id": parent.run_id,
        "mlflow_tracking_uri": tracker.uri if tracker.enabled else None, "prefect_flow_run_id": _flow_run_id(),
        "stage_seconds": times,
    }
    evals = None
    try:
        target = compile_target(cfg.target)
        objectives = cfg.objectives()
        obj_fns = [compile_target(o.expr) for o in objectives]
        evals = Evaluations(cfg, rd)

        # 1. seeds
        with _stage(times, "sample"):
            seeds = sample_seeds(cfg, str(rd))
        # 2. evaluate them
        with _stage(times, "evaluate"):
            recs = evals(seeds)
            evals.check_failures("seed evaluation")
        archs, y, seen = [], [], set()
        for a, r in zip(seeds, recs):
            if r is not None and r.ok and r.key not in seen:  # one label per distinct architecture
                seen.add(r.key)
                v = _value(target, r.metrics)
                if v is not None:
                    archs.append(a)
                    y.append(v)
        if recs and any(r is not None and r.ok for r in recs):
            target.check_names(next(r.metrics for r in recs if r is not None and r.ok).keys())
        logger.info("seed evaluations: %s", evals.counts())

        # 3. ranker
        with _stage(times, "train_ranker"):
            child = tracker.start("ranker", parent=parent)
            child.params({"ranker": cfg.ranker.model_dump(), "train": cfg.train.model_dump(), "n_train": len(archs), "target": cfg.target})

            def on_epoch(h: dict) -> None:
                vals = {k: v for k, v in h.items() if k != "epoch" and not isinstance(v, (list, tuple))}
                for i, v in enumerate(h.get("val_hop_spearman") or []):
                    vals[f"val_hop_spearman_{i}"] = v
                child.metrics(vals, step=int(h.get("epoch", 0)))

            trained, rinfo, ranker_path, rkey = train_ranker_task(cfg, str(rd), archs, y, on_epoch=on_epoch)
            child.metrics({"pred_spearman": rinfo["pred_spearman"], **{f"hop_spearman_{i}": v for i, v in enumerate(rinfo["hop_spearman"])},
                           "train_seconds": rinfo["seconds"]})
            if rinfo.get("reused"):
                for h in rinfo.get("history", []):
                    on_epoch(h)
            child.artifact(ranker_path, "ranker")
            plots = rd / "plots"
            plots.mkdir(exist_ok=True)
            for p in (plot_training(rinfo.get("history", []), plots / "training_curves.png"),
                      plot_hops(rinfo["hop_spearman"], plots / "hop_spearman.png")):
                if p:
                    child.artifact(p, "plots")
            version = child.register(f"autobuild-ranker-{cfg.space}", "ranker", description=f"AutoBuild ranker for {cfg.space}, target {cfg.target}",
                                     tags={"pred_spearman": round(rinfo["pred_spearman"], 4), "run_dir": str(rd)})
            child.end()
        summary["ranker"] = {"pred_spearman": rinfo["pred_spearman"], "hop_spearman": rinfo["hop_spearman"],
                             "spearman_on": rinfo["spearman_on"], "n_train": rinfo["n_train"], "model_version": version,
                             "path": ranker_path}

        # 4. unit scores
        with _stage(times, "score"):
            child = tracker.start("scoring", parent=parent)
            scores, importance, sdir = score_units_task(cfg, str(rd), trained, rkey)
            child.artifact(Path(sdir) / "unit_scores.csv", "scores")
            child.artifact(Path(sdir) / "importance.csv", "scores")
            p = plot_unit_scores(scores, plots / "unit_scores.png")
            if p:
                child.artifact(p, "plots")
            child.metrics({"n_unit_configs": len(scores)})

        # 5. build and prune
        with _stage(times, "build_prune"):
            bp = build_prune_task(cfg, str(rd), scores, importance, rkey)
            built_recs = evals(bp["built"]) if bp["built"] else []
            built = [{"arch": a, "metrics": (r.metrics if r is not None and r.ok else None),
                      "error": (r.error if r is not None and not r.ok else None)} for a, r in zip(bp["built"], built_recs)]
            write_json_atomic(rd / "built.json", {"built": built, "pruned": bp["pruned"]})
            child.artifact(rd / "built.json", "build")
            if bp["pruned"]:
                child.metrics({"pruned_size": float(bp["pruned"]["size"])})
            for i, b in enumerate(built):
                if b["metrics"]:
                    child.metrics({f"built_{i}_target": _value(target, b["metrics"]) or float("nan")})
            child.end()
        summary["built"] = built
        summary["pruned"] = None if not bp["pruned"] else {"size": bp["pruned"]["size"], "k": bp["pruned"]["k"]}

        # 6. search
        searches: dict[str, dict] = {}
        if cfg.search.enabled:
            which_list = {"pruned": ["pruned"], "full": ["full"], "both": ["pruned", "full"]}[cfg.search.space]
            if not bp["pruned"]:
                which_list = [w for w in which_list if w != "pruned"]
            with _stage(times, "search"):
                for which in which_list:
                    child = tracker.start(f"search-{which}", parent=parent)
                    child.params({"method": cfg.search.method, "budget": cfg.search.budget, "space": which,
                                  "objectives": [o.model_dump() for o in objectives]})
                    best_so_far = {"v": None}

                    def objective(batch, _e=evals):
                        natives = [_e.space.format(a) for a in batch]
                        rs = _e(natives, subflow=False)
                        out = []
                        for r in rs:
                            if r is None or not r.ok:
                                out.append(None)
                                continue
                            vals = [_value(f, r.metrics) for f in obj_fns]
                            out.append(None if any(v is None for v in vals) else tuple(vals))
                        return out

                    def on_trial(rec, _c=child, _b=best_so_far):
                        vals = rec.get("values")
                        m = {}
                        if vals is not None:
                            v0 = vals[0]
                            sign = 1 if objectives[0].direction == "maximize" else -1
                            if _b["v"] is None or sign * v0 > sign * _b["v"]:
                                _b["v"] = v0
                            m = {f"objective_{i}": v for i, v in enumerate(vals)}
                        if _b["v"] is not None:
                            m["best_objective_0"] = _b["v"]
                        _c.metrics(m, step=int(rec["n_eval"]))

                    res = search_task(cfg, str(rd), which, bp["pruned"], objective, optuna_url(cfg, rd), on_trial, key=rkey)
                    searches[which] = res
                    # a search reloaded from its stage output still counts (and offers winners) from the store
                    evals([h["arch"] for h in res["history"]], subflow=False)
                    out = rd / f"search_{which}.json"
                    write_json_atomic(out, res)
                    child.artifact(out, "search")
                    if res["best"] and res["best"]["values"]:
                        child.metrics({"best_objective_0": res["best"]["values"][0], "n_eval": res["n_eval"]})
                    child.end()
                    evals.check_failures(f"search ({which})")
            p = plot_search({w: [v if v is not None else math.nan for v in s["trajectory"]] for w, s in searches.items()},
                            plots / "search_progress.png")
            if p:
                parent.artifact(p, "plots")
        summary["search"] = {w: {"method": s["method"], "n_eval": s["n_eval"], "best": s["best"],
                                 "pareto_size": len(s["pareto"]), "domain_size": s["domain_size"], "study_name": s["study_name"]}
                             for w, s in searches.items()}

        # 7. winners: the best distinct architectures seen, re-evaluated with the final protocol
        with _stage(times, "winners"):
            sign0 = 1 if objectives[0].direction == "maximize" else -1
            cands = []
            for k, (a, r) in evals.records.items():
                if r.ok:
                    v = _value(obj_fns[0], r.metrics)
                    if v is not None:
                        cands.append((sign0 * v, k, a, r))
            cands.sort(key=lambda t: -t[0])
            winners: list[dict] = []
            if cfg.winners.top > 0 and cands:
                top = cands[: cfg.winners.top]
                final_settings = cfg.final_evaluator_settings()
                same = final_settings == dict(cfg.evaluator.settings) and cfg.winners.seed == cfg.seed
                final = evals if same else Evaluations(cfg, rd, settings=final_settings, seed=cfg.winners.seed)
                frecs = final([a for _, _, a, _ in top])
                for i, ((_, k, a, r), fr) in enumerate(zip(top, frecs)):
                    fm = fr.metrics if fr is not None and fr.ok else None
                    w = {"rank": i + 1, "arch": a, "search_metrics": r.metrics, "metrics": fm,
                         "error": None if fm else (fr.error if fr is not None else "not evaluated"),
                         "target": _value(target, fm) if fm else None}
                    child = tracker.start(f"winner-{i + 1}", parent=parent)
                    child.params({"arch": json.dumps(a, default=str), "rank": i + 1, "final_settings": final_settings})
                    if fm:
                        child.metrics(fm)
                    child.dict({"arch": a, "space": cfg.space, "metrics": fm, "search_metrics": r.metrics}, "winner/arch.json")
                    w["model_version"] = child.register(f"autobuild-winner-{cfg.space}", "winner",
                                                        description=f"AutoBuild winner #{i + 1} of {cfg.name}",
                                                        tags={"rank": i + 1, "target": w["target"]})
                    child.end()
                    winners.append(w)
                if not same:
                    summary["final_evaluations"] = final.counts()
        summary["winners"] = winners
        scored = [w for w in winners if w["metrics"] is not None and w["target"] is not None]
        if scored:
            best = max(scored, key=lambda w: sign0 * (_value(obj_fns[0], w["metrics"]) or -math.inf))
            summary["best"] = {"arch": best["arch"], "metrics": best["metrics"], "target": best["target"], "source": "winners"}
        elif cands:
            _, _, a, r = cands[0]
            summary["best"] = {"arch": a, "metrics": r.metrics, "target": _value(target, r.metrics), "source": "evaluations"}
        else:
            summary["best"] = None
        summary["evaluations"] = evals.counts()
        summary["status"] = "completed"
        if summary["best"]:
            parent.metrics({"best_target": summary["best"]["target"] or float("nan")})
    except BaseException as e:
        summary["status"] = "failed"
        summary["error"] = f"{type(e).__name__}: {e}"
        if evals is not None:
            summary["evaluations"] = evals.counts()
        _finish(summary, rd, times, t_start, parent, evals, failed=True)
        raise
    _finish(summary, rd, times, t_start, parent, evals, failed=False)
    return summary


def _finish(summary: dict, rd: Path, times: dict, t_start: float, parent, evals, failed: bool) -> None:
    times["total"] = round(time.perf_counter() - t_start, 3)
    summary["stage_seconds"] = times
    write_json_atomic(rd / "summary.json", summary)
    try:
        if evals is not None:
            from evaluators import EvaluationStore

            with EvaluationStore(evals.store) as st:
                st.export(rd / "evaluations.csv")
            parent.artifact(rd / "evaluations.csv", "evaluations")
        parent.metrics({f"seconds_{k}": v for k, v in times.items()})
        parent.metrics({f"evaluations_{k}": v for k, v in (summary.get("evaluations") or {}).items()})
        try:
            from tasks.report import write_report  # optional module

            path = write_report(rd)
            if path:
                summary["report"] = str(path)
                write_json_atomic(rd / "summary.json", summary)
        except ImportError:
            pass
        except Exception as e:  # a report problem must not fail a finished run
            summary["report_error"] = f"{type(e).__name__}: {e}"
        parent.artifact(rd / "summary.json")
        if (rd / "report.html").is_file():
            parent.artifact(rd / "report.html", "report")
        parent.end("FAILED" if failed else "FINISHED")
    except Exception:
        if not failed:
            raise
        traceback.print_exc()
    _prefect_artifacts(summary)


def _prefect_artifacts(summary: dict) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact
    except ImportError:  # pragma: no cover
        return
    ev = summary.get("evaluations") or {}
    rk = summary.get("ranker") or {}
    best = summary.get("best") or {}
    lines = [
        f"# AutoBuild run `{summary.get('name')}`: {summary.get('status')}",
        "",
        f"- space **{summary.get('space')}**, evaluator **{summary['evaluator']['kind']}**, target `{summary.get('target')}`",
        f"- evaluations: {ev.get('total', 0)} total, {ev.get('new', 0)} new, {ev.get('reused', 0)} reused, {ev.get('failed', 0)} failed",
    ]
    if rk:
        lines.append(f"- ranker Spearman {rk.get('pred_spearman', float('nan')):.3f} ({rk.get('spearman_on')}); per hop "
                     + ", ".join(f"{h:.3f}" for h in rk.get("hop_spearman", [])))
    if best:
        lines.append(f"- best target **{best.get('target')}**: `{json.dumps(best.get('arch'), default=str)}`")
    if summary.get("error"):
        lines.append(f"- error: {summary['error']}")
    lines.append(f"- run directory: `{summary.get('run_dir')}`; MLflow run `{summary.get('mlflow_run_id')}`")
    lines.append("")
    lines.append("| stage | seconds |\n|---|---|")
    lines += [f"| {k} | {v:.1f} |" for k, v in (summary.get("stage_seconds") or {}).items()]
    try:
        create_markdown_artifact("\n".join(lines), key="autobuild-summary", description="AutoBuild run summary")
        rows = [{"rank": w["rank"], "target": w.get("target"), "arch": json.dumps(w["arch"], default=str)} for w in summary.get("winners", [])]
        if rows:
            create_table_artifact(rows, key="autobuild-winners", description="Winners re-evaluated with the final protocol")
    except Exception:  # artifacts are a convenience; never fail the run for them
        pass
