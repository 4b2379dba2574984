"""Calibration of the training protocol, end to end with real tiny trainings on CPU.

Budgets here are a few dozen to a few hundred Fashion-MNIST images at 16x16 for one epoch: the
point is the mechanics (sampling, two seeds, noise ceiling, choice, cost cap, message, store
reuse), not the figures. On CPU with one thread the trainings are bit-reproducible, so the
outcomes below are stable.
"""

from __future__ import annotations

import json

import pytest
import torch

from search_spaces import get_space
from search_spaces.errors import AutoBuildError, ConfigError
from evaluators.calibration import (
    CalibrationBudget,
    CalibrationError,
    CalibrationResult,
    CalibrationSettings,
    apply_calibration,
    calibrate,
    should_calibrate,
)
from evaluators.store import EvaluationStore

TINY = dict(epochs=1, n_train=64, n_val=128, n_test=32, batch_size=32, resolution=16, device="cpu", progress=False,
            latency=False, threads=1, bn_recalibration=64)


from training_support import needs_fmnist, one_thread  # noqa: F401 (one_thread is an autouse fixture)


# ---- settings --------------------------------------------------------------------------------


def test_settings_defaults_and_shorthands():
    s = CalibrationSettings()
    assert s.enabled and s.threshold == 0.8 and s.seeds == [0, 1] and s.metric == "val_acc" and s.n_archs >= 3
    assert all(isinstance(b, CalibrationBudget) for b in s.budgets)
    s = CalibrationSettings(budgets=[[1, 500], "3x2000", "5xall", {"epochs": 2, "n_train": None}])
    assert [b.label() for b in s.budgets] == ["1x500", "3x2000", "5xall", "2xall"]
    assert s.budgets[2].images(1000) == 5000
    for bad in (dict(threshold=1.5), dict(seeds=[0, 0]), dict(seeds=[0]), dict(budgets=["1x10", "1x10"]), dict(bogus=1), dict(n_archs=2)):
        with pytest.raises(ValueError):
            CalibrationSettings(**bad)
    assert should_calibrate("train", None) and should_calibrate("training", {"enabled": True})
    assert not should_calibrate("train", {"enabled": False}) and not should_calibrate("nasbench_graph", None)


def test_apply_calibration_keeps_winners_at_least_as_long():
    res = CalibrationResult(space="nb201", metric="val_acc", threshold=0.8, status="chosen",
                            chosen=CalibrationBudget(epochs=5, n_train=20000), ceiling=0.9,
                            precision={"precision": "fp32", "channels_last": False, "source": "probe", "reason": "", "measured": None})
    ev, win = apply_calibration({"epochs": 3, "n_train": 25000, "amp": "auto"}, res, {"epochs": 15, "n_train": 10000})
    assert ev["epochs"] == 5 and ev["n_train"] == 20000 and ev["amp"] == "off" and ev["channels_last"] is False
    assert win == {"epochs": 15, "n_train": 20000}  # epochs already longer; n_train raised to the chosen
    _, win = apply_calibration({"epochs": 3}, res.to_dict(), {})  # from to_dict() too
    assert win == {"epochs": 5, "n_train": 20000}
    _, win = apply_calibration({"epochs": 3}, res, {"n_train": None})  # the whole split is longest
    assert win == {"epochs": 5, "n_train": None}
    off = CalibrationResult(space="nb201", metric="val_acc", threshold=0.8, status="disabled")
    assert apply_calibration({"epochs": 3}, off, {"epochs": 9}) == ({"epochs": 3}, {"epochs": 9})
    with pytest.raises(ConfigError, match="no_budget_ranks"):
        apply_calibration({}, CalibrationResult(space="x", metric="m", threshold=0.8, status="no_budget_ranks"))


# ---- end to end ---------------------------------------------------------------------------------


@needs_fmnist
def test_nb201_picks_a_budget_and_reuses_it_on_rerun(tmp_path):
    space = get_space("nb201")
    cs = CalibrationSettings(n_archs=6, budgets=["1x256", [1, 64]], threshold=0.5, max_seconds=600)
    seen = []
    with EvaluationStore(tmp_path / "ev.sqlite") as st:
        res = calibrate(space, TINY, st, cs, on_budget=seen.append)
        assert res.ok and res.chosen.label() == "1x64"  # cheapest first, and it ranks at this threshold
        assert res.ceiling >= 0.5 and len(res.budgets) == 1 and seen[0]["budget"] == "1x64"
        assert res.new == 12 and res.reused == 0 and len(st) == 12
        assert {r.fingerprint for r in st.records()} == {res.fingerprint}
        d = json.loads(json.dumps(res.to_dict(), allow_nan=False))  # strict JSON
        for k in ("status", "chosen", "ceiling", "spearman", "seconds", "wall_seconds", "budgets", "precision", "message", "threshold"):
            assert k in d
        row = d["budgets"][0]
        for k in ("budget", "epochs", "n_train", "images", "spearman", "ceiling", "n_pairs", "seconds", "seconds_per_arch", "new", "reused"):
            assert k in row
        assert d["precision"]["source"] == "cpu" and "CPU" in d["precision"]["reason"]
        # a killed or finished calibration reruns from the store: no new training, same figures
        again = calibrate(space, TINY, st, cs)
        assert again.new == 0 and again.reused == 12 and len(st) == 12
        assert again.ceiling == res.ceiling and again.chosen == res.chosen
    ev, win = apply_calibration(TINY, res, {"epochs": 1, "n_train": 32})
    assert ev["n_train"] == 64 and win["n_train"] == 64


@needs_fmnist
def test_ofa_stops_with_a_clear_message_at_the_cost_cap(tmp_path):
    space = get_space("ofa_mbv3")
    cs = CalibrationSettings(n_archs=4, budgets=["1x64", "1x256"], threshold=0.99, max_seconds=1.0)
    with EvaluationStore(tmp_path / "ev.sqlite") as st:
        with pytest.raises(CalibrationError) as ei:
            calibrate(space, TINY, st, cs)
        n = len(st)
    err = ei.value
    assert isinstance(err, AutoBuildError)
    msg = str(err)
    # what was measured, what was not trained and why, what a ranking budget would cost, what to do
    assert "ofa_mbv3" in msg and "1x64: ceiling" in msg and "s per training" in msg
    assert "1x256: not trained, predicted" in msg and "max_seconds" in msg
    assert "calibration.budgets" in msg and ("Extrapolat" in msg or "repeats" in msg)
    res = err.result
    assert res.status == "no_budget_ranks" and res.chosen is None and n == 8 == res.new
    assert [r["budget"] for r in res.budgets] == ["1x64"] and [s["budget"] for s in res.skipped] == ["1x256"]
    assert res.skipped[0]["predicted_seconds"] > 0 and res.extrapolation
    assert json.dumps(res.to_dict(), allow_nan=False)


def test_disabled_does_nothing(tmp_path):
    with EvaluationStore(tmp_path / "ev.sqlite") as st:
        res = calibrate("nb201", TINY, st, {"enabled": False})
        assert res.status == "disabled" and len(st) == 0 and "disabled" in res.message


# ---- pieces the flow relies on ----------------------------------------------------------------


def test_calibration_error_pickles_with_its_result():
    import pickle

    res = CalibrationResult(space="nb201", metric="val_acc", threshold=0.8, status="no_budget_ranks", message="measured ...")
    err = pickle.loads(pickle.dumps(CalibrationError("no budget ranks: measured ...", res)))
    assert isinstance(err, CalibrationError) and str(err) == "no budget ranks: measured ..."
    assert err.result.status == "no_budget_ranks" and err.result.space == "nb201"


def test_distinct_sample_tops_up_repeated_architectures():
    from evaluators.calibration import distinct_sample

    space = get_space("nb201")
    drawn = space.sample(400, seed=0)
    assert len({json.dumps(space.format(a)) for a in drawn}) < 400  # the plain sample repeats itself at this size ...
    archs = distinct_sample(space, 400, 0, False)
    keys = [json.dumps(space.format(a)) for a in archs]
    assert len(keys) == len(set(keys)) == 400  # ... the calibration sample does not


def test_run_config_calibration_section_and_calibrated_config():
    from tasks.config import load_config
    from tasks.stages import calibrated_config, calibration_settings

    cfg = load_config(None, ["evaluator.kind=train", "evaluator.settings={epochs: 3, n_train: 25000}", "target=test_acc",
                             "calibration.budgets=[1x500, [2, 1000]]", "calibration.n_archs=4", "winners.evaluator_settings={epochs: 1}"])
    assert cfg.calibration.enabled and [b.label() for b in cfg.calibration.budgets] == ["1x500", "2x1000"]
    assert should_calibrate(cfg.evaluator.kind, cfg.calibration)
    assert calibration_settings(cfg).metric == "test_acc"  # the target, when it is a metric name
    assert calibration_settings(load_config(None, ["target=val_acc - 2*flops", "calibration.metric=val_acc"])).metric == "val_acc"
    with pytest.raises(ConfigError, match="calibration"):
        load_config(None, ["calibration.treshold=0.7"])
    res = CalibrationResult(space="nb201", metric="val_acc", threshold=0.8, status="chosen", chosen=CalibrationBudget(epochs=2, n_train=1000))
    out = calibrated_config(cfg, res)
    assert out.evaluator.settings == {"epochs": 2, "n_train": 1000} and cfg.evaluator.settings["epochs"] == 3  # a copy
    final = out.final_evaluator_settings()
    assert final["epochs"] >= 2 and final["n_train"] >= 1000


def test_report_renders_the_calibration_table(tmp_path):
    from tasks.report import render_report

    res = CalibrationResult(space="nb201", metric="val_acc", threshold=0.8, status="no_budget_ranks", message="calibration: no candidate budget ...",
                            budgets=[{"budget": "1x64", "epochs": 1, "n_train": 64, "images": 64, "spearman": 0.4, "ceiling": 0.63,
                                      "n_pairs": 6, "failed": 0, "seconds_per_arch": 1.2, "seconds": 14.4}],
                            skipped=[{"budget": "3x1000", "epochs": 3, "n_train": 1000, "images": 3000, "predicted_seconds": 700.0,
                                      "predicted_seconds_per_arch": 58.3, "reason": "would bring calibration to 714 s > max_seconds=600"}])
    (tmp_path / "summary.json").write_text(json.dumps({"status": "failed", "space": "nb201", "calibration": res.to_dict()}))
    html = render_report(tmp_path)
    assert "Training-protocol calibration" in html and "1x64" in html and "0.63" in html
    assert "not trained: would bring calibration to 714 s" in html and "no candidate budget" in html
