"""The calibration stage of the `autobuild` flow, end to end: real tiny trainings on Fashion-MNIST.

The flow is called in this process (one ephemeral Prefect API for the module) with a real SQLite
MLflow store per run directory. nb201 at a tiny budget ranks at a lowered threshold, so the run
calibrates, goes on with the chosen budget and a rerun trains nothing; ofa_mbv3 under a cost cap
of one second stops before the seeds with the message that says what was measured. Budgets are
a few dozen 16x16 images for one epoch: the point is the mechanics, not the figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training_support import needs_fmnist, one_thread  # noqa: F401 (one_thread is an autouse fixture)

pytestmark = [pytest.mark.slow, needs_fmnist]

TRAIN = dict(dataset="fashion-mnist", epochs=1, n_train=32, n_val=128, n_test=32, batch_size=32, resolution=16, device="cpu",
             progress=False, latency=False, threads=1, bn_recalibration=64)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow store for the module's runs (creating a store's tables costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _config(space: str, calibration: dict, tracking_uri: str, **over) -> dict:
    cfg = {
        "name": f"calibration-{space}", "space": space, "target": "val_acc", "seed": 0,
        "evaluator": {"kind": "train", "settings": dict(TRAIN), "batch_size": 8, "concurrency": 1},
        "calibration": calibration,
        "seeds": {"n": 11}, "train": {"epochs": 3, "batch_size": 4}, "prune": {"enabled": False},
        "search": {"enabled": False, "budget": 13},
        "winners": {"top": 1, "evaluator_settings": {"n_train": 32}},  # shorter than the budget calibration chooses
        "tracking": {"tracking_uri": tracking_uri, "register_models": False},
    }
    cfg.update(over)
    return cfg


def _run(cfg: dict, run_dir: Path):
    from flows.pipeline import autobuild

    return autobuild(config=cfg, run_dir=str(run_dir))


@pytest.fixture(scope="module")
def nb201_runs(tmp_path_factory, tracking_uri):
    """One nb201 run that calibrates and completes, and its rerun in the same run directory."""
    run_dir = tmp_path_factory.mktemp("cal-nb201") / "run"
    cfg = _config("nb201", {"n_archs": 6, "budgets": ["1x256", "1x64"], "threshold": 0.5, "max_seconds": 600}, tracking_uri)
    first = _run(cfg, run_dir)
    again = _run(cfg, run_dir)
    return run_dir, first, again


@pytest.mark.timeout(600)
def test_nb201_calibrates_then_runs_with_the_chosen_budget(nb201_runs):
    run_dir, s, _ = nb201_runs
    assert s["status"] == "completed"
    c = s["calibration"]
    assert c["status"] == "chosen" and c["chosen"] == {"epochs": 1, "n_train": 64} and c["ceiling"] >= 0.5
    assert c["new"] == 12 and c["reused"] == 0 and [b["budget"] for b in c["budgets"]] == ["1x64"]
    assert "calibrate" in s["stage_seconds"]
    # the seeds were trained with the chosen budget; the winners' final training is no shorter
    assert s["evaluator"]["settings"]["n_train"] == 64 and s["evaluator"]["configured_settings"]["n_train"] == 32
    assert s["winners_settings"]["n_train"] == 64 and s["winners_settings"]["epochs"] >= 1
    assert json.loads((run_dir / "calibration.json").read_text())["fingerprint"] == c["fingerprint"]
    # calibration trainings are ordinary store records under the chosen budget's fingerprint
    from evaluators import EvaluationStore

    with EvaluationStore(run_dir / "evaluations.sqlite") as st:
        fps = [r.fingerprint for r in st.records()]
    assert fps.count(c["fingerprint"]) >= 12
    # MLflow: a `calibration` child run with the per-budget figures; the report has the table
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=s["mlflow_tracking_uri"])
    children = client.search_runs([client.get_run(s["mlflow_run_id"]).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{s['mlflow_run_id']}' and tags.mlflow.runName = 'calibration'")
    assert len(children) == 1
    run = children[0]
    assert run.data.tags["chosen"] == "1x64" and abs(run.data.metrics["chosen_ceiling"] - c["ceiling"]) < 1e-9
    assert [m.value for m in client.get_metric_history(run.info.run_id, "ceiling")] == [pytest.approx(c["ceiling"])]
    html = (run_dir / "report.html").read_text()
    assert "Training-protocol calibration" in html and "1x64" in html and "Spearman between seeds" in html


@pytest.mark.timeout(600)
def test_nb201_rerun_reuses_every_training(nb201_runs):
    _, first, again = nb201_runs
    assert again["status"] == "completed"
    assert again["calibration"]["new"] == 0 and again["calibration"]["reused"] == 12
    assert again["calibration"]["ceiling"] == first["calibration"]["ceiling"]
    assert again["evaluations"]["new"] == 0 and again["evaluations"]["total"] == first["evaluations"]["total"]


@pytest.mark.timeout(600)
def test_ofa_stops_before_the_seeds_with_the_clear_message(tmp_path, tracking_uri):
    from evaluators.calibration import CalibrationError

    run_dir = tmp_path / "run"
    cfg = _config("ofa_mbv3", {"n_archs": 4, "budgets": ["1x32", "1x256"], "threshold": 0.99, "max_seconds": 1}, tracking_uri)
    with pytest.raises(CalibrationError) as ei:
        _run(cfg, run_dir)
    msg = str(ei.value)
    assert "ofa_mbv3" in msg and "1x32: ceiling" in msg and "1x256: not trained, predicted" in msg and "calibration.budgets" in msg
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "failed" and "CalibrationError" in s["error"]
    assert s["calibration"]["status"] == "no_budget_ranks" and s["calibration"]["new"] == 8
    assert "evaluate" not in s["stage_seconds"]  # no seed was trained
    # a rerun reads the 8 trainings back and stops again without training
    with pytest.raises(CalibrationError):
        _run(cfg, run_dir)
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["calibration"]["new"] == 0 and s["calibration"]["reused"] == 8
