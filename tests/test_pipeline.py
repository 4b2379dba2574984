"""The pipeline for real: `autobuild run` on the ephemeral Prefect API with a SQLite MLflow store.

NAS-Bench-Graph ships inside its wheel, so these tests need no shared data. They run the CLI in a
subprocess (as a user would) with a tiny config so the whole module stays around two minutes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from pipeline_support import AUTOBUILD, REPO, TINY, pipeline_env as _env, run_cli as _run


@pytest.fixture(scope="module")
def uninterrupted(tiny_run):
    """One uninterrupted tiny run (shared by the end-to-end and the kill tests, and the MLflow-model tests)."""
    return dict(tiny_run)


@pytest.mark.timeout(360)
def test_end_to_end_run_summary_and_mlflow(uninterrupted, capsys):
    s = dict(uninterrupted)
    out, tmp_path = Path(s.pop("_out")), Path(s.pop("_tmp"))
    assert s["status"] == "completed"
    assert s["status"] == "completed"
    assert s["space"] == "nasbench_graph" and s["evaluator"]["kind"] == "nasbench_graph" and s["target"] == "acc"
    ev = s["evaluations"]
    assert ev["total"] == 40 and ev["new"] == ev["total"] and ev["reused"] == 0 and ev["failed"] == 0
    assert -1 <= s["ranker"]["heldout_spearman"] <= 1 and len(s["ranker"]["hop_spearman"]) == 5
    assert s["built"] and s["built"][0]["values"][0] > 0
    assert s["best"]["metrics"]["acc"] >= max(b["values"][0] for b in s["built"]) - 1e-9
    assert s["mlflow_run_id"] and s["prefect_flow_run_id"]
    for stage in ("sample", "evaluate", "train_ranker", "score", "build_prune", "search", "winners", "total"):
        assert stage in s["stage_seconds"]
    assert s["search"]["n_eval"] == 40 and s["search"]["method"] == "autobuild" and s["search"]["rounds"] >= 1
    # the summary names the rankers that steered the search (last round, held out), not only the seed ranker
    rounds_json = json.loads((out / "search_run.json").read_text())["rounds"]
    last = s["search"]["last_round"]
    assert last["round"] == rounds_json[-1]["round"] and last["n_evaluated"] == rounds_json[-1]["n_evaluated"] > s["ranker"]["n_train"]
    assert last["val_spearman"] == rounds_json[-1]["val_spearman"]
    from autobuild_cli.commands import print_summary

    print_summary(s, out, 1.0)
    printed = capsys.readouterr().out
    assert "seed ranker: " in printed and f"search rankers, round {last['round']}: held-out Spearman " in printed
    # the report shows every round (held-out Spearman, pruned space, changes, where the picks came from)
    rounds_html = (out / "report.html").read_text(encoding="utf-8").split('id="rounds"')[1].split("</section>")[0]
    assert "<img " in rounds_html and rounds_html.count("<tr>") - 1 == s["search"]["rounds"]

    # MLflow: parent + children with explicit parent ids, artifacts, registered models
    from mlflow import MlflowClient

    uri = f"sqlite:///{out / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = c.get_run(s["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    children = c.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    names = {ch.info.run_name for ch in children}
    assert {"ranker", "scoring", "search-autobuild", "winner-1", "winner-2"} <= names, names
    ranker = next(ch for ch in children if ch.info.run_name == "ranker")
    assert len(c.get_metric_history(ranker.info.run_id, "loss")) == 4  # per-epoch curve
    assert "hop_spearman_0" in ranker.data.metrics

    def files(run_id, path=""):
        out_ = []
        for f in c.list_artifacts(run_id, path):
            out_ += files(run_id, f.path) if f.is_dir else [f.path]
        return out_

    rf = files(ranker.info.run_id)
    assert {"model/MLmodel", "model/artifacts/ranker/ranker.safetensors", "model/artifacts/ranker/ranker.json"} <= set(rf)
    assert {"plots/training_curves.png", "plots/hop_spearman.png"} <= set(rf)
    scoring = next(ch for ch in children if ch.info.run_name == "scoring")
    sf = set(files(scoring.info.run_id))
    assert {"scores/unit_scores.csv", "scores/importance.csv", "scores/op_effects.csv", "build/built.json", "plots/unit_scores.png"} <= sf
    search = next(ch for ch in children if ch.info.run_name == "search-autobuild")
    assert len(c.get_metric_history(search.info.run_id, "best_acc")) >= 10
    rounds = c.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{search.info.run_id}'")
    assert len(rounds) == s["search"]["rounds"] and all(r.info.run_name.startswith("round-") for r in rounds)
    assert "unit_scores.csv" in files(rounds[0].info.run_id)
    pf = set(files(parent.info.run_id))
    assert {"evaluations/evaluations.csv", "summary.json"} <= pf
    assert c.get_registered_model("autobuild-ranker-nasbench_graph")
    assert len(c.search_model_versions("name='autobuild-winner-nasbench_graph'")) == 2

    # Rerun in the same directory: every stage and evaluation is reused.
    r2 = _run(["run", "-c", "configs/quickstart.yaml", "--out", str(out), *[a for x in TINY for a in ("--set", x)]], tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["status"] == "completed" and s2["evaluations"]["new"] == 0 and s2["evaluations"]["reused"] == s["evaluations"]["total"]
    assert s2["best"]["arch"] == s["best"]["arch"]
    assert s2["ranker"]["heldout_spearman"] == s["ranker"]["heldout_spearman"]


def _stored(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return int(con.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])
    except sqlite3.Error:
        return 0


def _run_until(args: list[str], tmp_path: Path, out: Path, when: str) -> list[str]:
    """Start `autobuild run`, SIGKILL its whole process group at kill point ``when``; return its output."""
    import threading

    proc = subprocess.Popen(AUTOBUILD + args, cwd=REPO, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    seen = threading.Event()
    marker = {"training": "training the ranker on", "search": "searching with"}.get(when)

    def reader():
        for line in proc.stdout:
            lines.append(line)
            if marker and marker in line:
                seen.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    db = out / "evaluations.sqlite"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if when == "evaluation" and _stored(db) > 0:
                break
            if marker and seen.wait(0.05):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"run ended before the {when} kill point:\n" + "".join(lines[-40:])
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
        proc.wait(timeout=30)
        th.join(timeout=10)
    return lines


@pytest.mark.timeout(420)
def test_killed_runs_resume_reuse_and_match_uninterrupted(tmp_path, uninterrupted):
    """SIGKILL during evaluation, during ranker training and during search; the rerun completes,
    reuses every stored evaluation and ends with the uninterrupted run's result."""
    out = tmp_path / "run"
    args = ["run", "-c", "configs/quickstart.yaml", "--out", str(out), *[a for x in TINY for a in ("--set", x)],
            "--set", "evaluator.batch_size=2", "--set", "evaluator.concurrency=1"]
    for point in ("evaluation", "training", "search"):
        before = _stored(out / "evaluations.sqlite")
        _run_until(args, tmp_path, out, point)
        assert _stored(out / "evaluations.sqlite") >= before  # nothing lost
        s = out / "summary.json"
        assert not s.exists() or json.loads(s.read_text())["status"] != "completed"
    stored = _stored(out / "evaluations.sqlite")
    assert stored > 0

    r = _run(args, tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    ref = uninterrupted
    assert s["status"] == "completed"
    assert s["evaluations"]["reused"] >= stored > 0
    assert s["evaluations"]["new"] + s["evaluations"]["reused"] == s["evaluations"]["total"] == ref["evaluations"]["total"]
    # the ranker was trained on exactly the uninterrupted run's labels (same input-keyed stage)
    ranker_stage = lambda d: sorted(p.name for p in (Path(d) / "stages").glob("ranker-*"))  # noqa: E731
    assert ranker_stage(out) == ranker_stage(ref["_out"])
    # ... and, ranker training being reproducible across processes (private torch generators),
    # the resumed run's ranker, built architectures, search and final result are the uninterrupted run's.
    assert s["ranker"]["heldout_spearman"] == ref["ranker"]["heldout_spearman"]
    assert s["ranker"]["hop_spearman"] == ref["ranker"]["hop_spearman"]
    assert [b["arch"] for b in s["built"]] == [b["arch"] for b in ref["built"]]
    assert s["search"]["best"] == ref["search"]["best"]
    assert [w["arch"] for w in s["winners"]] == [w["arch"] for w in ref["winners"]]
    assert s["best"]["arch"] == ref["best"]["arch"] and s["best"]["target"] == ref["best"]["target"]


@pytest.mark.timeout(120)
def test_unreachable_mlflow_fails_fast_with_clear_error(tmp_path):
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    t0 = time.time()
    r = _run(["run", "-c", "configs/quickstart.yaml", "--out", str(tmp_path / "run"), "--set", f"tracking.tracking_uri=http://127.0.0.1:{port}",
              "--set", "tracking.timeout_s=3", "--set", "seeds.n=10"], tmp_path, timeout=110)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unreachable" in r.stderr and f"127.0.0.1:{port}" in r.stderr
    assert time.time() - t0 < 60


def test_unreachable_prefect_api_fails_fast(tmp_path):
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    env = _env(tmp_path)
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    t0 = time.time()
    r = subprocess.run(AUTOBUILD + ["run", "-c", "configs/quickstart.yaml", "--out", str(tmp_path / "run")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Prefect API" in r.stderr and "unreachable" in r.stderr and "Traceback" not in r.stderr
    assert time.time() - t0 < 60
