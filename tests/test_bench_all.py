"""``autobuild bench all --quick`` end to end: every section's Markdown, JSON and PNG appear and
hold numbers (the numbers themselves are meaningless at quick budgets)."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest


def test_bench_all_quick(shared_dir, tmp_path):
    data = shared_dir / "data"
    if not (data / "nb201" / "nb201_cifar10.csv").is_file():
        pytest.skip("NAS-Bench-201 table missing")
    from autobuild_cli.main import main

    out = tmp_path / "results"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["bench", "all", "--out", str(out), "--quick", "--data", str(data), "--jobs", "1"])
    assert rc == 0
    md = (tmp_path / "results.md").read_text()
    for heading in ("## Search at equal budget", "## Ranker vs training-set size", "## Ablations", "## Learning rate",
                    "## Scoring every unit configuration", "### Interpretability against NAS-Bench-201 ground truth"):
        assert heading in md, heading
    assert md.count("*How produced:*") >= 6
    for method in ("autobuild", "autobuild-build", "predictor", "random", "rea", "tpe"):
        row = next(line for line in md.splitlines() if line.startswith(f"| {method} |"))
        assert re.search(r"\d+\.\d\d ± \d+\.\d\d", row), row
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"search_nb201.png", "studies_size.png", "studies_ablation.png"} <= set(pngs), pngs
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
        assert f"({out.name}/{p.name})" in md  # every plot is linked from the page
    search = json.loads((out / "search_nb201.json").read_text())
    assert search["optimum"] == pytest.approx(94.3733, abs=1e-3)
    assert search["methods"]["autobuild"]["20"]["evaluations_used"] == 20
    assert search["settings"]["search"]["method"] == "autobuild"  # the driver's defaults, as `autobuild run`
    # a table holding part of its space: every method searched the table's rows only
    proteins = json.loads((out / "search_partial_proteins.json").read_text())
    assert "the 2021 architectures the table holds" in proteins["searched"]
    assert all(proteins["methods"][m]["20"]["best_mean"] <= proteins["optimum"] for m in proteins["methods"])
    assert "## Search on tables that hold part of their space" in md and "## Summary: every search comparison" in md
    assert "## Op effects: read-out vs NAS-Bench-201 ground truth" in md
    assert "| n train | sign right from the sample alone | read-out sign right |" in md
    if (data / "transnas101_micro" / "zc_transbench101_micro.json").is_file():
        assert "## Seven tasks on one cell space (TransNAS-Bench-101 micro)" in md
        assert {"transnas_agreement.png", "transnas_transfer.png"} <= set(pngs)
    if (data / "ofa_mbv3_imagenet" / "ofa_mbv3_w10_top1.jsonl").is_file():
        assert "## OFA-MobileNetV3 on ImageNet" in md
        assert (out / "studies_ofa_values.png").is_file()
        assert "## Search in a space too large to tabulate (OFA-MobileNetV3, surrogate oracle)" in md
        ofa = json.loads((out / "search_ofa_mbv3_surrogate.json").read_text())
        assert ofa["optimum"] == pytest.approx(ofa["surrogate"]["optimum"])
        assert ofa["methods"]["autobuild"]["20"]["evaluations_used"] == 20
    else:
        assert "OFA-MobileNetV3 table" in md  # the skip note


def test_op_effect_signs_the_data_allow(shared_dir):
    """The sampling limit beside the op-effect read-out: how often n random cells alone give each
    op effect's true sign. Large effects are always signed; skip_connect (+0.12) is a coin flip."""
    table = shared_dir / "data" / "nb201" / "nb201_cifar10.csv"
    if not table.is_file():
        pytest.skip("NAS-Bench-201 table missing")
    from benchmarks.studies import NB201Truth

    truth = NB201Truth(str(table))
    assert truth.op_effect["nor_conv_3x3"] == pytest.approx(3.04, abs=0.01) and truth.op_effect["skip_connect"] == pytest.approx(0.12, abs=0.01)
    limit = truth.sign_limit(200, draws=400, seed=0)
    assert limit["none"] == 1.0 and limit["nor_conv_3x3"] == 1.0 and limit["nor_conv_1x1"] > 0.98
    assert 0.4 < limit["skip_connect"] < 0.75, limit


def _cell(best: list) -> dict:
    """A search-result cell (single objective) holding its per-seed bests."""
    return {"best_mean": float(np.mean(best)), "best": best}


def test_computed_readings_give_the_paired_standard_error():
    """The win/loss reading of a search table states the standard error of the per-seed
    difference and flags a difference under two of them."""
    from benchmarks.all import verdict_multi, verdict_single

    res = {"optimum": 10.0, "budgets": [50, 100], "methods": {
        "autobuild": {"50": _cell([9.0, 9.2, 9.4]), "100": _cell([9.5, 9.6, 9.7])},
        "predictor": {"50": _cell([8.0, 8.1, 8.2]), "100": _cell([9.4, 9.9, 9.6])},
        "tpe": {"50": _cell([7.0, 7.0, 7.0]), "100": _cell([9.0, 9.0, 9.0])}}}
    text = verdict_single(res)
    # B=50: +1.10 over predictor, per-seed differences 1.0 / 1.1 / 1.2 -> SE 0.06: a clear win
    assert "B=50: **win** (autobuild 9.20 vs predictor 8.10, +1.10 ± 0.06 paired SE)" in text
    # B=100: -0.03 against predictor, differences 0.1 / -0.3 / 0.1 -> SE 0.13: within noise
    assert "B=100: **loss** (autobuild 9.60 vs predictor 9.63, -0.03 ± 0.13 paired SE, within 2 SE)" in text
    assert "+1.10 ± 0.06 / -0.03 ± 0.13" in text
    # both means within 0.01 of the optimum: a tie whichever is larger, as the acceptance counts it
    at_opt = {"optimum": 10.0, "budgets": [50], "methods": {"autobuild": {"50": _cell([10.0, 10.0, 9.985])},
                                                            "tpe": {"50": _cell([10.0, 9.99, 9.99])}}}
    assert "B=50: tie at the optimum (both within 0.01)" in verdict_single(at_opt)
    multi = {"budgets": [100], "methods": {"autobuild": {"100": {"hv_ratio_mean": 0.9, "hv_ratio": [0.8, 0.9, 1.0]}},
                                           "nsga2": {"100": {"hv_ratio_mean": 0.8, "hv_ratio": [0.7, 0.8, 0.9]}}}}
    assert "+0.100 ± 0.000 paired SE)" in verdict_multi(multi)


def test_heldout_table_counts_cells_and_keeps_a_tiny_loss_visible():
    """The held-out summary row names the best other method per budget and a loss that rounds to
    0.00 still reads as a loss."""
    from benchmarks.all import md_search_heldout

    res = {"optimum": 10.0, "budgets": [50, 100], "methods": {
        "autobuild": {"50": _cell([9.0, 9.2, 9.4]), "100": _cell([9.600, 9.600, 9.600])},
        "predictor": {"50": _cell([8.0, 8.1, 8.2]), "100": _cell([9.604, 9.602, 9.603])},
        "tpe": {"50": _cell([7.0, 7.0, 7.0]), "100": _cell([9.0, 9.0, 9.0])}}}
    text = md_search_heldout({"demo": res})
    assert "| demo (10.00) | 50 | **9.20** | 8.10 | 7.00 | — | — | +1.10 ± 0.06 (predictor) |" in text
    assert "| 100 | 9.60 | **9.60** |" in text and "-0.003 ± 0.00 (predictor)" in text
    assert "at or above every baseline in 1 of 2 cells; behind in 1: demo at 100 (-0.003 against predictor). Against the methods outside this project (TPE, REA, random) it is at or above them in 2 of 2." in text


def test_heldout_devices_table_reads_hypervolume_against_the_best_other():
    from benchmarks.all import md_multi_heldout

    def hv_cell(r):
        return {"hv_ratio_mean": float(np.mean(r)), "hv_ratio": r}

    res = {"budgets": [100], "methods": {"autobuild": {"100": hv_cell([0.80, 0.90])}, "nsga2": {"100": hv_cell([0.85, 0.95])},
                                         "random": {"100": hv_cell([0.5, 0.6])}}}
    text = md_multi_heldout({"dev": res})
    assert "| dev | 100 | 0.850 | **0.900** | 0.550 | -0.050 ± 0.000 (nsga2) |" in text
    assert "at or above every other method's in 0 of 1 cells; behind in 1: dev at 100 (-0.050 against nsga2)" in text


def test_summary_plot_lists_every_comparison(tmp_path):
    from benchmarks.all import md_forest

    res = {"nbg_cora": {"budgets": [50], "methods": {"autobuild": {"50": _cell([9.0, 9.2, 9.4])}, "tpe": {"50": _cell([8.0, 8.1, 8.2])}}},
           "mo_pixel3": {"budgets": [100], "methods": {"autobuild": {"100": {"hv_ratio_mean": 0.85, "hv_ratio": [0.8, 0.9]}},
                                                       "nsga2": {"100": {"hv_ratio_mean": 0.9, "hv_ratio": [0.85, 0.95]}}}}}
    text = md_forest(res, tmp_path)
    assert (tmp_path / "search_summary.png").stat().st_size > 0
    # +1.10 ± 0.06 is clearly ahead; -0.05 ± 0.00 clearly behind
    assert "at or above the best other method in 1 of 2 comparisons, clearly ahead in 1, clearly behind in 1: pixel3, B=100 (-0.05 against nsga2)" in text


def test_tune_variant_can_run_the_predictor_loop(tmp_path):
    """``method=predictor`` in a variant runs the predictor loop with the variant's settings: with no
    other override it is the reference predictor run, seed for seed."""
    from benchmarks.tune import _method, tune
    from search_spaces.errors import ConfigError

    assert _method(["method=predictor", "search.options.batch_min=5"]) == ("predictor", ["search.options.batch_min=5"])
    assert _method(["search.options.batch_min=5"]) == ("autobuild", ["search.options.batch_min=5"])
    with pytest.raises(ConfigError, match="method=NAME"):
        _method(["method=grid"])
    out = tmp_path / "tune.json"
    lines: list[str] = []
    res = tune(["cora"], ["predictor", "p"], 1, 1000, out, extra={"p": ["method=predictor"]}, log=lines.append, budgets=[20, 15])
    # progress: a line per finished repeat (naming table, method and seed), then one per finished cell
    assert sum("cora" in ln and "repeat 1/1 (seed 1000)" in ln and "predictor" in ln for ln in lines) == 2
    assert [ln.split(":")[0].split() for ln in lines if "repeat" not in ln] == [["cora", "predictor"], ["cora", "p"]]
    with pytest.raises(ConfigError, match=r"budgets \(15, 20\), not \[50, 100, 200\]"):
        tune(["cora"], ["tpe"], 1, 1000, out, log=lines.append)  # the file holds cora at other budgets
    cells = res["tables"]["cora"]
    assert cells["p"]["budgets"] == [15, 20]
    for b in ("15", "20"):  # the same search (run times aside)
        same, ref = cells["p"]["cells"][b], cells["predictor"]["cells"][b]
        assert {k: v for k, v in same.items() if "second" not in k} == {k: v for k, v in ref.items() if "second" not in k}
    assert res["variants"]["p"] == ["method=predictor"] and json.loads(out.read_text())["tables"]["cora"].keys() == {"predictor", "p"}
