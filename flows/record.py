"""What a run leaves behind besides its stage outputs: ``summary.json``, MLflow runs (a parent per
flow run; children for the ranker, scoring, each search round and each winner), plots, the HTML
report, Prefect artifacts and the closing log lines. The flow body calls one method per stage.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from search_spaces import get_space

from tasks.config import RunConfig
from tasks.layout import RunLayout, write_json_atomic
from tasks.report import rounded

from .mlflow_models import ranker_model_name, save_ranker_model, save_winner_model, winner_model_name
from .tracking import Tracker, metric_name, plot_hops, plot_search, plot_training, plot_unit_scores


def _epoch_metrics(h: dict) -> dict:
    """One epoch's scalar metrics (the per-hop validation lists are logged once, as ``hop_spearman_*``)."""
    return {k: v for k, v in h.items() if k != "epoch" and not isinstance(v, (list, tuple))}


def _flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    except Exception:
        return None


class RunRecorder:
    """Records one run: the summary, MLflow runs and plots, stage by stage.

    Args:
        cfg: the run config.
        layout: the run directory's layout.
        objective_names: names of the objective values (the first is what the ranker learns); their
            MLflow metric names are :func:`~flows.tracking.metric_name` of them.
    """

    def __init__(self, cfg: RunConfig, layout: RunLayout, objective_names: list[str]):
        self.cfg, self.layout, self.names = cfg, layout, [metric_name(n) for n in objective_names]
        self.log = get_run_logger()
        self.t0 = time.perf_counter()
        self.times: dict[str, float] = {}
        self.tracker = Tracker(cfg.tracking, layout.root)
        self.parent = self.tracker.start(cfg.name, tags={"prefect.flow_run_id": _flow_run_id() or "", "autobuild.space": cfg.space,
                                                         "autobuild.run_dir": str(layout.root)})
        self.parent.params(cfg.model_dump(mode="json"))
        self.summary: dict[str, Any] = {
            "status": "running", "name": cfg.name, "space": cfg.space, "target": cfg.target,
            "evaluator": {"kind": cfg.evaluator.kind, "settings": cfg.evaluator.settings}, "search_method": cfg.search.method,
            "budget": cfg.search.budget, "run_dir": str(layout.root), "mlflow_run_id": self.parent.run_id,
            "mlflow_tracking_uri": self.tracker.uri if self.tracker.enabled else None, "mlflow_experiment_id": self.tracker.experiment_id,
            "mlflow_runs_url": self.tracker.runs_url(), "mlflow_run_url": self.tracker.runs_url(self.parent.run_id),
            "prefect_flow_run_id": _flow_run_id(),
            "stage_seconds": self.times, "stages": {},
        }
        self.evals = None
        self._calibration = None  # the calibration child run while it is open

    @contextlib.contextmanager
    def stage(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - t, 3)

    def used(self, stage: str, path: Path) -> None:
        self.summary["stages"][stage] = self.layout.relative(path)

    # ---- stages --------------------------------------------------------------------------------
    def calibration_run(self):
        """A ``calibration`` child run; returns the per-budget callback that logs each row as measured."""
        from tasks.stages import calibration_settings

        cs = calibration_settings(self.cfg)
        child = self.tracker.start("calibration", parent=self.parent)
        child.params({"n_archs": cs.n_archs, "seeds": cs.seeds, "budgets": [b.label() for b in cs.budgets],
                      "threshold": cs.threshold, "max_seconds": cs.max_seconds, "metric": cs.metric})
        self._calibration, step = child, {"i": 0}

        def on_budget(row: dict) -> None:
            child.metrics({k: row[k] for k in ("spearman", "ceiling", "seconds", "seconds_per_arch", "images", "n_pairs", "failed")
                           if isinstance(row.get(k), (int, float)) and math.isfinite(row[k])}, step=step["i"])
            step["i"] += 1

        return on_budget

    def calibration(self, res) -> None:
        d = res.to_dict()
        child = self._calibration
        child.dict(d, "calibration.json")
        child.text(res.table() + "\n\n" + res.message + "\n", "calibration.md")
        child.tags({"status": res.status, "chosen": res.chosen.label() if res.chosen else "none"})
        child.metrics({k: v for k, v in {"chosen_ceiling": res.ceiling, "chosen_spearman": res.spearman, "calibration_seconds": res.seconds,
                                         "calibration_new": res.new, "calibration_reused": res.reused}.items()
                       if isinstance(v, (int, float)) and math.isfinite(v)})
        child.end("FINISHED" if res.ok else "FAILED")
        self._calibration = None
        self.summary["calibration"] = {k: v for k, v in d.items() if k != "archs"}
        self.log.info("calibration %s: %s", res.status, res.chosen.label() if res.chosen else "no budget ranks")

    def calibrated(self, cfg: RunConfig) -> None:
        """The run goes on with the calibrated evaluator settings (the summary shows both)."""
        self.summary["evaluator"]["configured_settings"] = self.summary["evaluator"]["settings"]
        self.summary["evaluator"]["settings"] = dict(cfg.evaluator.settings)
        self.summary["winners_settings"] = cfg.final_evaluator_settings()
        self.cfg = cfg

    def seeds(self, history: list, evals) -> None:
        self.evals = evals
        self.log.info("seed evaluations: %s", evals.counts())

    def ranker_run(self):
        child = self.tracker.start("ranker", parent=self.parent)
        child.params({"ranker": self.cfg.ranker.model_dump(), "train": self.cfg.train.model_dump(), "target": self.cfg.target})
        self._ranker = child
        return lambda h: child.metrics(_epoch_metrics(h), step=int(h.get("epoch", 0)))

    def ranker(self, info: dict, rdir: Path, examples: list) -> None:
        """``examples``: a few evaluated architectures (native encodings) for the model's signature."""
        child = self._ranker
        child.params({"n_train": info["n_train"]})
        child.metrics({"heldout_spearman": info["pred_spearman"], "train_seconds": info["seconds"],
                       **{f"hop_spearman_{i}": v for i, v in enumerate(info["hop_spearman"])}})
        if info.get("reused"):
            for h in info.get("history", []):
                child.metrics(_epoch_metrics(h), step=int(h.get("epoch", 0)))
        for p in (plot_training(info.get("history", []), self.layout.plots / "training_curves.png", info.get("best_epoch")),
                  plot_hops(info["hop_spearman"], self.layout.plots / "hop_spearman.png")):
            if p:
                child.artifact(p, "plots")
        name, version = ranker_model_name(self.cfg.space), None
        if self.tracker.enabled:
            obj = self.cfg.objectives()[0]
            with tempfile.TemporaryDirectory() as tmp:
                child.log_model(save_ranker_model(Path(tmp) / "model", rdir / "ranker", get_space(self.cfg.space), self.cfg.target,
                                                  obj.direction, examples), "model")
            version = child.register(
                name, "model", description=f"ranker of run {self.cfg.name} (MLflow run {self.parent.run_id}), target {self.cfg.target}",
                tags={"heldout_spearman": rounded(info["pred_spearman"]), "target": self.cfg.target, "run_dir": str(self.layout.root)},
                model_description=f"AutoBuild ranker for the {self.cfg.space} space: predict(architecture strings) -> predicted target "
                                  "values. One version per run; each version's tags name its target and held-out Spearman.")
        child.end()
        self.used("ranker", rdir)
        self.summary["ranker"] = {"heldout_spearman": info["pred_spearman"], "spearman_on": info["spearman_on"],
                                  "hop_spearman": info["hop_spearman"], "best_epoch": info.get("best_epoch"),
                                  "n_train": info["n_train"], "target_range": info.get("target_range"), "model_version": version,
                                  "path": str(rdir / "ranker"), "model_uri": f"models:/{name}/{version}" if version else None}

    def scores(self, scores, importance, sdir: Path) -> None:
        child = self.tracker.start("scoring", parent=self.parent)
        for f in ("unit_scores.csv", "importance.csv", "op_effects.csv"):
            child.artifact(sdir / f, "scores")
        p = plot_unit_scores(scores, self.layout.plots / "unit_scores.png")
        if p:
            child.artifact(p, "plots")
        child.metrics({"n_unit_configs": len(scores)})
        self._scoring = child
        self.used("scores", sdir)

    def built(self, bp: dict, bdir: Path, history: list, space) -> None:
        keys = {json.dumps(a, sort_keys=True, default=str) for a in bp["built"]}
        built = [{"arch": space.format(r["arch"]), "values": r["values"]} for r in history
                 if json.dumps(space.format(r["arch"]), sort_keys=True, default=str) in keys]
        write_json_atomic(self.layout.built, {"built": built, "pruned": bp["pruned"]})
        child = self._scoring
        child.artifact(self.layout.built, "build")
        if bp["pruned"]:
            child.metrics({"pruned_size": float(bp["pruned"]["size"])})
        for i, b in enumerate(built):
            if b["values"]:
                child.metrics({f"built_{i}_{self.names[0]}": b["values"][0]})
        child.end()
        self.used("build", bdir)
        self.summary["built"] = built
        self.summary["pruned"] = None if not bp["pruned"] else {"size": bp["pruned"]["size"], "k": bp["pruned"]["k"]}

    def table_subset(self, n: int) -> None:
        """The evaluator is a table that holds part of the space: seeds and the search draw from its rows alone."""
        self.log.info("the %s table holds %d architectures, a part of the %s space: seeds and the search draw from them alone",
                      self.cfg.evaluator.kind, n, self.cfg.space)
        self.parent.params({"searched_table_rows": n})
        self.summary["searched_table_rows"] = n

    def no_seed_ranker(self, n_ok: int, n_seeds: int) -> None:
        """Too few seeds succeeded for a seed ranker: nothing is scored, built or pruned before the
        iterative search, whose own rankers (one child run per round) carry the knowledge."""
        from autobuild_core.train import MIN_TRAINING_ARCHS

        why = (f"only {n_ok} of {n_seeds} seed evaluations succeeded (a ranker needs {MIN_TRAINING_ARCHS}), so the seed ranker, "
               "unit scores, built architectures and pruned space were skipped; the iterative search trains its own rankers "
               "once enough of its evaluations succeed (the failures are in the evaluation store).")
        self.log.warning(why)
        self.parent.tags({"autobuild.seed_ranker": "skipped"})
        self.summary.update(seed_ranker={"skipped": True, "n_ok": n_ok, "n_seeds": n_seeds, "why": why}, built=[], pruned=None)

    def search_run(self):
        """MLflow callbacks of the search: one metric point per evaluation, one child run per round."""
        child = self.tracker.start(f"search-{self.cfg.search.method}", parent=self.parent)
        child.params({"method": self.cfg.search.method, "budget": self.cfg.search.budget, "objectives": self.names})
        self._search, best = child, {"v": None}
        sign = 1 if self.cfg.objectives()[0].direction == "maximize" else -1

        def on_trial(rec: dict) -> None:
            m = {}
            if rec.get("values") is not None:
                v0 = rec["values"][0]
                if best["v"] is None or sign * v0 > sign * best["v"]:
                    best["v"] = v0
                m = dict(zip(self.names, rec["values"]))
            if best["v"] is not None:
                m[f"best_{self.names[0]}"] = best["v"]
            child.metrics(m, step=int(rec["n_eval"]))

        def on_round(info: dict) -> None:
            r = self.tracker.start(f"round-{info.get('round', 0)}", parent=child)
            m = {k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            m.update({f"pick_percentile_{src}": pct for src, (pct, _) in (info.get("source_percentile") or {}).items()})
            r.metrics(m)
            if info.get("unit_scores") is not None:
                r.text(info["unit_scores"].to_csv(index=False), "unit_scores.csv")
            r.dict(json.loads(json.dumps({k: v for k, v in info.items() if k not in ("unit_scores", "batch")}, default=str)), "round.json")
            r.end()
            self.log.info("round %s: %s evaluated, held-out Spearman %s", info.get("round"), info.get("n_evaluated"),
                          rounded(info.get("val_spearman")))

        return on_trial, on_round

    def search(self, res: dict, sdir: Path) -> None:
        out = self.layout.search_json("run")
        write_json_atomic(out, res)
        self._search.artifact(out, "search")
        if res["best"] and res["best"]["values"]:
            self._search.metrics({f"best_{self.names[0]}": res["best"]["values"][0], "n_eval": res["n_eval"]})
        traj = [v if v is not None else math.nan for v in res["trajectory"]]
        p = plot_search(traj, self.layout.plots / "search_progress.png", self.names[0], self.cfg.seeds.n)
        if p:
            self._search.artifact(p, "plots")
        self._search.end()
        self.used("search", sdir)
        rounds = res.get("rounds") or []
        self.summary["search"] = {"method": res["method"], "n_eval": res["n_eval"], "best": res["best"],
                                  "pareto_size": len(res["pareto"]), "rounds": len(rounds), "study_name": res["study_name"]}
        if rounds:  # the rankers that steered the search, not the seed ranker: held out on most of the run's evaluations
            last = rounds[-1]
            self.summary["search"]["last_round"] = {k: last.get(k) for k in ("round", "n_evaluated", "val_spearman")}

    def winners(self, winners: list[dict], final_settings: dict, final_counts: dict | None) -> None:
        scored = [w for w in winners if w["target"] is not None]
        sign = 1 if self.cfg.objectives()[0].direction == "maximize" else -1
        best = max(scored, key=lambda w: sign * w["target"]) if scored else None
        name = winner_model_name(self.cfg.space)
        for w in winners:
            child = self.tracker.start(f"winner-{w['rank']}", parent=self.parent)
            child.params({"arch": json.dumps(w["arch"], default=str), "rank": w["rank"], "final_settings": final_settings})
            if w["metrics"]:
                child.metrics({f"final_{metric_name(k)}": v for k, v in w["metrics"].items()})
            child.dict({"arch": w["arch"], "space": self.cfg.space, "metrics": w["metrics"], "search_metrics": w["search_metrics"]},
                       "winner/arch.json")
            w["model_version"] = w["model_uri"] = None
            if self.tracker.enabled and w["metrics"]:
                with tempfile.TemporaryDirectory() as tmp:
                    child.log_model(save_winner_model(Path(tmp) / "model", w, self.cfg.space), "model")
                w["model_version"] = child.register(
                    name, "model", description=f"rank-{w['rank']} winner of run {self.cfg.name} (MLflow run {self.parent.run_id})",
                    tags={"rank": w["rank"], "target": self.cfg.target, "target_value": rounded(w["target"])},
                    aliases=[f"rank-{w['rank']}"] + (["champion"] if w is best else []),
                    model_description=f"AutoBuild winners for the {self.cfg.space} space: predict(metric names) -> the architecture "
                                      "and its recorded metrics; unwrap_python_model().load_module() builds it as a torch module. "
                                      "Aliases: champion = best winner of the latest run, rank-N = its N-th winner.")
                w["model_uri"] = f"models:/{name}/{w['model_version']}" if w["model_version"] else None
            child.end()
        self.summary["winners"] = winners
        if final_counts is not None:
            self.summary["final_evaluations"] = final_counts
        if best is not None:
            self.summary["best"] = {"arch": best["arch"], "metrics": best["metrics"], "target": best["target"], "source": "winners",
                                    "model_uri": best.get("model_uri")}  # this version; the alias `champion` moves with later runs

    # ---- the end --------------------------------------------------------------------------------
    def finish(self, error: BaseException | None = None) -> dict:
        s = self.summary
        s["status"] = "failed" if error is not None else "completed"
        if self._calibration is not None:  # calibration itself raised
            self._calibration.end("FAILED")
            self._calibration = None
        if error is not None:
            s["error"] = f"{type(error).__name__}: {error}"
        if self.evals is not None:
            s["evaluations"] = self.evals.counts()
        self.times["total"] = round(time.perf_counter() - self.t0, 3)
        write_json_atomic(self.layout.summary, s)
        try:
            self._close_tracking(error is not None)
        except Exception:
            if error is None:
                raise
            traceback.print_exc()
        self._prefect_artifacts()
        self._log_outcome()
        return s

    def _close_tracking(self, failed: bool) -> None:
        s, p = self.summary, self.parent
        if self.evals is not None:
            from evaluators import EvaluationStore

            with EvaluationStore(self.evals.store) as st:
                st.export(self.layout.evaluations_csv)
            p.artifact(self.layout.evaluations_csv, "evaluations")
        p.metrics({f"seconds_{k}": v for k, v in self.times.items()})
        p.metrics({f"evaluations_{k}": v for k, v in (s.get("evaluations") or {}).items()})
        if s.get("best") and s["best"].get("target") is not None:
            p.metrics({f"best_{metric_name(self.cfg.target)}": s["best"]["target"]})
        try:
            from tasks.report import write_report

            s["report"] = str(write_report(self.layout.root))
        except Exception as e:  # a report problem must not fail a finished run
            s["report_error"] = f"{type(e).__name__}: {e}"
        write_json_atomic(self.layout.summary, s)
        p.artifact(self.layout.summary)
        if self.layout.report.is_file():
            p.artifact(self.layout.report, "report")
        p.end("FAILED" if failed else "FINISHED")

    def _log_outcome(self) -> None:
        """The outcome in a few lines at the end of the flow run's log (numbers rounded)."""
        s = self.summary
        best = s.get("best") or {}
        ev = s.get("evaluations") or {}
        self.log.info("run %s %s in %.1f s: %s evaluations (%s new, %s reused, %s failed)", s["name"], s["status"],
                      self.times.get("total", 0.0), ev.get("total", 0), ev.get("new", 0), ev.get("reused", 0), ev.get("failed", 0))
        if best:
            self.log.info("best architecture (%s): %s = %s, %s", best.get("source"), self.cfg.target, rounded(best.get("target")),
                          json.dumps(best.get("arch"), default=str))
            self.log.info("its metrics: %s", json.dumps(rounded(best.get("metrics")), default=str))
        for b in s.get("built") or []:
            self.log.info("built architecture: %s -> %s", json.dumps(b["arch"], default=str), rounded(b.get("values")))
        if s.get("mlflow_run_url"):
            self.log.info("MLflow run: %s", s["mlflow_run_url"])
        elif s.get("mlflow_run_id"):
            self.log.info("MLflow run %s in %s (browse it with `mlflow ui --backend-store-uri %s`)", s["mlflow_run_id"],
                          s.get("mlflow_tracking_uri"), s.get("mlflow_tracking_uri"))
        if s.get("report"):
            self.log.info("report: %s", s["report"])

    def _prefect_artifacts(self) -> None:
        """Markdown artifacts of the flow run: the summary, and the winners with every metric (rounded)."""
        from prefect.artifacts import create_markdown_artifact

        s = self.summary
        ev, rk, best = s.get("evaluations") or {}, s.get("ranker") or {}, s.get("best") or {}
        lines = [
            f"# AutoBuild run `{s.get('name')}`: {s.get('status')}", "",
            f"- space **{s.get('space')}**, evaluator **{s['evaluator']['kind']}**, target `{s.get('target')}`, "
            f"search **{s.get('search_method')}**, budget {s.get('budget')}",
            f"- evaluations: {ev.get('total', 0)} total, {ev.get('new', 0)} new, {ev.get('reused', 0)} reused, {ev.get('failed', 0)} failed",
        ]
        if rk:
            lines.append(f"- ranker held-out Spearman {rounded(rk.get('heldout_spearman'))} ({rk.get('spearman_on')})")
        if best:
            lines.append(f"- best {s.get('target')} **{rounded(best.get('target'))}**: `{json.dumps(best.get('arch'), default=str)}`")
            lines.append(f"- its metrics: `{json.dumps(rounded(best.get('metrics')), default=str)}`")
        for b in s.get("built") or []:
            lines.append(f"- built: `{json.dumps(b['arch'], default=str)}` -> {rounded(b.get('values'))}")
        if s.get("error"):
            lines.append(f"- error: {s['error']}")
        mlflow = f"[{s.get('mlflow_run_id')}]({s['mlflow_run_url']})" if s.get("mlflow_run_url") else f"`{s.get('mlflow_run_id')}`"
        lines += [f"- run directory: `{s.get('run_dir')}`; MLflow run {mlflow}; report `{s.get('report')}`", "",
                  "| stage | seconds |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in self.times.items()]
        try:
            create_markdown_artifact("\n".join(lines), key="autobuild-summary", description="AutoBuild run summary")
            winners = s.get("winners") or []
            if winners:
                create_markdown_artifact(winners_markdown(winners, s.get("target")), key="autobuild-winners",
                                         description="Winners re-evaluated with the final protocol")
        except Exception:  # artifacts are a convenience; never fail the run for them
            pass


def winners_markdown(winners: list[dict], target: str | None) -> str:
    """The winners as a Markdown table: rank, target, every final metric (rounded), architecture."""
    keys = list(dict.fromkeys(k for w in winners for k in (w.get("metrics") or {})))
    head = ["rank", str(target or "target"), *keys, "architecture"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in winners:
        m = rounded(w.get("metrics") or {})
        cells = [str(w["rank"]), str(rounded(w.get("target")))] + ["" if m.get(k) is None else str(m[k]) for k in keys]
        cells.append(f"`{json.dumps(w['arch'], default=str)}`" if w.get("metrics") else f"`{json.dumps(w['arch'], default=str)}` ({w.get('error')})")
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "# Winners (final protocol)\n\n" + "\n".join(rows)
