"""What a user sees of a served run: one `autobuild serve` -> `autobuild trigger --wait` run (shared
by every test here) through docs/screenshots.py, then its screenshots, the CLI's printed summary,
the Prefect logs, graph and Markdown artifacts, and the report. This is also the suite's test of
deploying prefect.yaml (`serve` runs `prefect deploy --all`) and triggering through the REST API
onto a process worker, with evaluation batches as flow runs of their own.

Numbers a person reads carry at most 4 decimals; the raw values stay in summary.json and the CSVs.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DECIMALS_5 = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?![\w])")  # a number printed with more than 4 decimals


def _screenshots_module():
    spec = importlib.util.spec_from_file_location("autobuild_docs_screenshots", REPO / "docs" / "screenshots.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _get(api: str, path: str, body: dict) -> list:
    from urllib.request import Request, urlopen

    req = Request(f"{api}{path}", data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    with urlopen(req, timeout=30) as r:  # noqa: S310 - loopback server started here
        return json.loads(r.read())


def _load_served_models(s: dict, mlflow_url: str) -> dict:
    """Load the run's registered ranker and champion winner from the served registry and predict."""
    import mlflow

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(mlflow_url)
    mlflow.set_registry_uri(mlflow_url)
    try:
        arch = json.dumps(s["best"]["arch"])
        pred = np.asarray(mlflow.pyfunc.load_model(s["ranker"]["model_uri"]).predict([arch]), dtype=float)
        champion = mlflow.pyfunc.load_model(f"models:/autobuild-winner-{s['space']}@champion").predict([s["target"]])
        return {"arch": arch, "ranker_pred": pred, "champion": champion}
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


@pytest.fixture(scope="module")
def served_run(tmp_path_factory) -> dict:
    """A tiny quickstart run served and triggered as a user would, its outputs and screenshots; every
    process is stopped (`autobuild serve --stop`) before the tests look at them."""
    ss = _screenshots_module()
    tmp = tmp_path_factory.mktemp("served")
    work = tmp / "project"  # a copy, so the test's serve state never meets a user's own
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".venv", ".git", ".autobuild", "runs", "__pycache__", "*.db",
                                                             ".pytest_cache", "results", "img"))
    run_dir = tmp / "run"
    params = [p for p in ss.TINY_PARAMS if not p.startswith("config.train.epochs=")] + ["config.train.epochs=3"]
    browser = ss.chromium()
    out: dict = {"run_dir": run_dir, "browser": browser}
    t0 = time.perf_counter()
    seconds = out["seconds"] = {}
    with ss.Served(work, tmp / "serve-home") as served:
        seconds["serve"] = time.perf_counter() - t0
        out["pids"] = served.pids()
        out["serve_stdout"] = served.serve_output
        fr_id, out["trigger_stdout"] = served.trigger(run_dir, params=params, timeout=420)
        seconds["trigger"] = time.perf_counter() - t0 - seconds["serve"]
        from mlflow import MlflowClient

        summary = json.loads((run_dir / "summary.json").read_text())
        parent = MlflowClient(tracking_uri=served.mlflow).get_run(summary["mlflow_run_id"])
        out["mlflow_status"], out["mlflow_flow_run_tag"] = parent.info.status, parent.data.tags.get("prefect.flow_run_id")
        out["flow_run_id"], out["api"], out["mlflow"] = fr_id, served.api, served.mlflow
        out["models"] = _load_served_models(summary, served.mlflow)
        out["markdown"] = served.markdown_artifacts(fr_id)
        out["logs"] = [row["message"] for row in _get(served.api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [fr_id]}}, "limit": 200})]
        out["task_runs"] = [t["name"] for t in _get(served.api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [fr_id]}}})]
        subs = _get(served.api, "/flow_runs/filter", {"flows": {"name": {"any_": ["evaluate-batch"]}}})
        out["subflows"] = [f["name"] for f in subs]
        out["subflow_states"] = [(f["state"] or {}).get("type") for f in subs]
        out["batch_logs"] = [row["message"] for row in _get(served.api, "/logs/filter",
                                                             {"logs": {"flow_run_id": {"any_": [f["id"] for f in subs]}}, "limit": 200})]
        t1 = time.perf_counter()
        out["shots"] = ss.take(served, run_dir, fr_id, tmp / "img", browser) if browser else None
        seconds["screenshots"] = time.perf_counter() - t1
    seconds["total"] = time.perf_counter() - t0
    print("served run, seconds:", {k: round(v, 1) for k, v in seconds.items()})
    return out


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_serve_trigger_and_stop(served_run):
    """What a user types: `autobuild serve` (Prefect + MLflow servers on loopback, a worker, the
    deployments), `autobuild trigger ... --wait` with nothing exported, then `autobuild serve --stop`.
    The deployed run logs to the served MLflow server; --stop leaves no server process behind."""
    s = json.loads((served_run["run_dir"] / "summary.json").read_text())
    api_port = served_run["api"].split(":")[2].split("/")[0]
    assert f"http://127.0.0.1:{api_port}" in served_run["serve_stdout"] and served_run["mlflow"] in served_run["serve_stdout"]
    assert s["status"] == "completed" and s["prefect_flow_run_id"] == served_run["flow_run_id"]
    assert s["mlflow_tracking_uri"] == served_run["mlflow"] and served_run["mlflow_status"] == "FINISHED"
    assert served_run["mlflow_flow_run_tag"] == served_run["flow_run_id"]  # the MLflow run names its Prefect flow run
    # evaluations ran as flow runs of the evaluate-batch deployment (deployed from prefect.yaml by serve), all completed
    assert served_run["subflow_states"] and set(served_run["subflow_states"]) == {"COMPLETED"}, served_run["subflow_states"]
    assert s["evaluations"]["total"] >= 40 and s["evaluations"]["failed"] == 0
    serve_json = served_run["run_dir"].parent / "project" / ".autobuild" / "serve.json"
    assert f"Prefect API: {served_run['api']} (from {serve_json})" in served_run["trigger_stdout"]
    assert s["mlflow_runs_url"].startswith(f"{served_run['mlflow']}/#/experiments/") and s["mlflow_runs_url"].endswith("/runs")
    deadline = time.time() + 30
    while time.time() < deadline and any(_pid_alive(p) for p in served_run["pids"]):
        time.sleep(0.5)
    assert not any(_pid_alive(p) for p in served_run["pids"]), f"processes left running: {served_run['pids']}"


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_screenshots_of_a_served_run(served_run):
    if served_run["browser"] is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; `make system-packages` does it): no screenshots")
    from PIL import Image

    ss = _screenshots_module()
    assert set(served_run["shots"]) == set(ss.SHOTS)
    for name, path in served_run["shots"].items():
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        assert img.shape[:2] == ss.SHOTS[name][::-1], name
        assert path.stat().st_size > 20_000 and img.std() > 10, f"{name} is (nearly) blank"
        # not one colour over most of the picture (a page that did not render)
        flat = np.unique(img.reshape(-1, 3) // 8, axis=0, return_counts=True)[1].max() / (img.shape[0] * img.shape[1])
        assert flat < 0.9, f"{name}: {flat:.0%} of the pixels share one colour"


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_people_read_rounded_numbers_and_the_outcome(served_run):
    s = json.loads((served_run["run_dir"] / "summary.json").read_text())
    assert s["status"] == "completed"
    # the CLI's printed summary (trigger --wait prints it as `autobuild run` does)
    cli = served_run["trigger_stdout"]
    assert "Completed" in cli and "best (winners): acc" in cli and "MLflow run: http://127.0.0.1:" in cli
    assert not DECIMALS_5.findall(cli), DECIMALS_5.findall(cli)
    # the report
    html = (served_run["run_dir"] / "report.html").read_text()
    visible = re.sub(r"<style>.*?</style>|src=\"data:[^\"]*\"", "", html, flags=re.S)
    assert not DECIMALS_5.findall(visible), DECIMALS_5.findall(visible)[:5]
    assert "rests on the ranker" in visible and "measured target range" in visible
    # the Prefect Markdown artifacts: the summary and the winners with every metric
    md = served_run["markdown"]
    assert {"autobuild-summary", "autobuild-winners"} <= set(md)
    for text in md.values():
        assert not DECIMALS_5.findall(text), DECIMALS_5.findall(text)
    for w in s["winners"]:
        for k in w["metrics"]:
            assert f" {k} |" in md["autobuild-winners"], k
    # the flow's log ends with the outcome; batches log progress; stages are nodes of the graph
    logs = served_run["logs"]
    assert any(m.startswith("best architecture (winners): acc = ") for m in logs)
    assert any(m.startswith(f"MLflow run: {served_run['mlflow']}/#/experiments/{s['mlflow_experiment_id']}/runs/{s['mlflow_run_id']}")
               for m in logs)
    assert any(m.startswith("report: ") for m in logs) and any(m.startswith("built architecture: ") for m in logs)
    outcome = [m for m in logs if m.startswith(("run screenshots completed", "best architecture", "its metrics", "built architecture",
                                                "MLflow run", "report: "))]
    assert len(outcome) >= 5 and not [m for m in outcome if DECIMALS_5.findall(m)], outcome
    assert any(re.fullmatch(r"\d+/\d+ evaluated \(\d+ new, \d+ reused, \d+ failed\)", m) for m in served_run["batch_logs"]), \
        served_run["batch_logs"][:10]
    assert any(n.startswith("winners") for n in served_run["task_runs"]), served_run["task_runs"]
    assert served_run["subflows"] and all(re.fullmatch(r"evaluate-\d+-nasbench_graph", n) for n in served_run["subflows"])


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_served_registry_models_load_and_predict(served_run):
    """The registered ranker and the champion winner load through models:/ URIs from the served
    registry: the ranker predicts a finite value for an architecture string, the winner returns its
    architecture and recorded target value."""
    s = json.loads((served_run["run_dir"] / "summary.json").read_text())
    m = served_run["models"]
    assert m["ranker_pred"].shape == (1,) and np.isfinite(m["ranker_pred"]).all()
    assert list(m["champion"]["arch"]) == [m["arch"]] and float(m["champion"]["value"][0]) == s["best"]["metrics"][s["target"]]


def _pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
