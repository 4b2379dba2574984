"""The registered ranker and winners are real MLflow models: after a tiny pipeline run (shared
with test_pipeline), load them through ``models:/`` URIs from the run's SQLite registry and
predict; a winner of a trained space builds a runnable torch module. Also what the experiment
shows: the ML (runs) view, metric names that say what they are, nothing logged twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline_support import REPO


@pytest.fixture()
def registry(tiny_run):
    """mlflow's global tracking/registry URIs pointed at the run's store for one test, then restored."""
    import mlflow

    uri = f"sqlite:///{Path(tiny_run['_out']) / 'mlflow.db'}"
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


@pytest.mark.timeout(420)
def test_registered_ranker_and_winners_load_and_predict(tiny_run, registry):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from autobuild_core.train import TrainedRanker
    from search_spaces import get_space

    s = tiny_run
    space = get_space(s["space"])
    archs = [w["arch"] for w in s["winners"]] + [b["arch"] for b in s["built"]]
    strings = [a if isinstance(a, str) else json.dumps(a) for a in archs]

    # the ranker: architecture strings in, predicted target values out (the trained ranker's own predictions)
    assert s["ranker"]["model_uri"] == f"models:/autobuild-ranker-{s['space']}/{s['ranker']['model_version']}"
    ranker = mlflow.pyfunc.load_model(s["ranker"]["model_uri"])
    assert ranker.metadata.signature is not None and ranker.metadata.signature.inputs.input_types()
    pred = np.asarray(ranker.predict(strings), dtype=float)
    direct = TrainedRanker.load(s["ranker"]["path"]).predict([space.parse(a) for a in archs])
    assert pred.shape == (len(archs),) and np.allclose(pred, direct, rtol=1e-5)
    assert np.allclose(np.asarray(ranker.predict(pd.DataFrame({"arch": strings})), dtype=float), pred)

    # the winners: the champion alias is the best winner; predict returns its architecture and recorded metrics
    client = MlflowClient(tracking_uri=registry, registry_uri=registry)
    name = f"autobuild-winner-{s['space']}"
    model = client.get_registered_model(name)
    assert set(model.aliases) >= {"champion"} | {f"rank-{w['rank']}" for w in s["winners"]}
    assert "winner #" not in (model.description or "") and "champion" in model.description
    best_w = next(w for w in s["winners"] if w["arch"] == s["best"]["arch"])
    assert s["best"]["model_uri"] == best_w["model_uri"] == f"models:/{name}/{best_w['model_version']}"
    assert mlflow.pyfunc.load_model(f"models:/{name}@champion").predict([s["target"]])["arch"][0] == json.dumps(s["best"]["arch"])
    champion = mlflow.pyfunc.load_model(s["best"]["model_uri"])
    assert champion.metadata.signature is not None
    out = champion.predict(sorted(s["best"]["metrics"]))
    assert list(out["metric"]) == sorted(s["best"]["metrics"])
    assert np.allclose(out["value"], [s["best"]["metrics"][k] for k in sorted(s["best"]["metrics"])])
    assert set(out["arch"]) == {json.dumps(s["best"]["arch"])}
    second = s["winners"][1]
    rank2 = mlflow.pyfunc.load_model(f"models:/{name}@rank-{second['rank']}")
    assert set(rank2.predict([s["target"]])["arch"]) == {json.dumps(second["arch"])}

    # ... and builds the architecture as a runnable torch module (a GNN here: nodes x features, edges)
    import torch

    module = champion.unwrap_python_model().load_module()
    assert isinstance(module, torch.nn.Module)
    x, edges = torch.randn(12, space.default_input["in_chans"]), torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    assert module(x, edges).shape == (12, space.default_input["num_classes"])

    # models from code: code and JSON/safetensors artifacts, no pickled objects
    run_dir = Path(s["_out"])
    logged = [p for p in (run_dir / "mlartifacts").rglob("MLmodel")]
    assert len(logged) == 1 + len(s["winners"])
    assert all("loader_module: mlflow.pyfunc.loaders.code_model" in p.read_text() for p in logged)
    assert not [p for p in (run_dir / "mlartifacts").rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]


@pytest.mark.timeout(180)
def test_ranker_loads_outside_the_repository(tiny_run, tmp_path):
    """The registered ranker carries the code it needs: a fresh interpreter, started elsewhere
    with no project path, loads it from the registry and predicts."""
    s = tiny_run
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(s['_out']) / 'mlflow.db'}"
    arch = json.dumps(s["best"]["arch"])
    code = ("import json, sys, mlflow; m = mlflow.pyfunc.load_model(sys.argv[1]); "
            "print(json.dumps([float(v) for v in m.predict([sys.argv[2]])])); print(sys.modules['autobuild_core'].__file__)")
    r = subprocess.run([sys.executable, "-c", code, s["ranker"]["model_uri"], arch], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=170)
    assert r.returncode == 0, r.stderr[-3000:]
    value, module_file = r.stdout.strip().splitlines()[-2:]
    assert np.isfinite(json.loads(value)[0])
    assert str(REPO) not in module_file  # imported from the model's own code copy


def test_experiment_view_metric_names_and_importance(tiny_run, registry):
    from mlflow import MlflowClient

    s = tiny_run
    c = MlflowClient(tracking_uri=registry, registry_uri=registry)
    parent = c.get_run(s["mlflow_run_id"])
    exp = c.get_experiment(parent.info.experiment_id)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"  # MLflow's ML view: runs, not GenAI traces
    assert s["mlflow_runs_url"] == f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
    assert s["mlflow_run_url"] == f"{s['mlflow_runs_url']}/{s['mlflow_run_id']}"
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_name = {r.info.run_name: r for r in runs}
    ranker = by_name["ranker"].data.metrics
    assert any(k.startswith("hop_spearman_") for k in ranker) and not any(k.startswith("val_hop_spearman") for k in ranker)
    winner = by_name["winner-1"].data.metrics
    assert "final_n_params" in winner and "final_params" not in winner
    assert f"best_{s['target']}" in by_name[f"search-{s['search_method']}"].data.metrics
    assert f"best_{s['target']}" in parent.data.metrics
    every = {k for r in [parent, *runs] for k in r.data.metrics}
    assert not any(k.startswith("objective_") for k in every)

    import pandas as pd

    imp = pd.read_csv(Path(s["_out"]) / s["stages"]["scores"] / "importance.csv")
    cat = imp[imp["kind"] != "continuous"]
    assert cat["count"].notna().all() and cat["count"].sum() > 0
    assert imp["spread"].notna().all() and (imp["spread"] >= 0).all()


@pytest.mark.timeout(120)
def test_winner_of_a_trained_space_builds_a_torch_module(tmp_path):
    """A winner of a space that is trained (OFA-MobileNetV3), registered in a fresh SQLite registry,
    loads through ``models:/`` and builds a network that classifies an image batch."""
    import mlflow
    import torch
    from mlflow import MlflowClient

    from flows.mlflow_models import save_winner_model, winner_model_name
    from search_spaces import get_space

    space = get_space("ofa_mbv3")
    arch = space.format(space.sample(1, seed=3)[0])
    winner = {"rank": 1, "arch": arch, "metrics": {"val_acc": 0.8, "params": 1000.0}, "search_metrics": {}, "target": 0.8}
    path = save_winner_model(tmp_path / "model", winner, space.name)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = c.create_experiment("w", artifact_location=(tmp_path / "art").as_uri())
    run = c.create_run(exp)
    c.log_artifacts(run.info.run_id, str(path), "model")
    c.create_registered_model(winner_model_name(space.name))
    mv = c.create_model_version(winner_model_name(space.name), source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    before = mlflow.get_registry_uri()
    mlflow.set_registry_uri(uri)
    try:
        m = mlflow.pyfunc.load_model(f"models:/{winner_model_name(space.name)}/{mv.version}")
    finally:
        mlflow.set_registry_uri(before)
    assert float(m.predict(["val_acc"])["value"][0]) == pytest.approx(0.8)
    net = m.unwrap_python_model().load_module(num_classes=10, in_chans=1, resolution=32).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 32, 32)).shape == (2, 10)
