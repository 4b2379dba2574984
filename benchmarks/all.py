"""``autobuild bench all``: regenerate every published number, table and plot in one command.

Runs the other bench modules (search, studies, ranker, motifs, train) with the settings
docs/results.md reports, writes each section's JSON and plots into ``--out`` and the Markdown
beside it, each section with the exact command that produced it; sections whose data is missing
become a one-line note. Timing sections run first and alone; the rest are spread over ``--jobs``
processes. ``--quick`` checks the plumbing with tiny budgets; ``--render-only`` rewrites the page
from the JSON already in ``--out``. How long it takes: docs/results.md.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np

from .common import _clean
from .search import BASELINES, best_other, signed, verdict_multi, verdict_single

NB201 = "nb201/nb201_cifar10.csv"
NB201_LAT = "nb201/nb201_latency_ms.csv"
OFA = "ofa_mbv3_imagenet/ofa_mbv3_w10_top1.jsonl"
SCORINGS = ("paper", "marginal")  # default first (chosen on tuning seeds 1000+, see docs/results.md)
MO_DEVICES = ("2080ti_1", "pixel3")
# latency devices no setting was tuned on (tuning used 1080ti_1, eyeriss, fpga, raspi4): full mode only
MO_HELDOUT = ("gold_6226", "titan_rtx_1", "silver_4114", "2080ti_256")
TRANSNAS = "transnas101_micro/zc_transbench101_micro.json"
NBG_DATASETS = ("cora", "citeseer")  # NAS-Bench-Graph ships in its wheel: these sections need no data folder
# NAS-Bench-Graph tables that no setting was tuned on (tuning used cora, citeseer, pubmed, photo): a check that the
# defaults generalise, run in full mode only
NBG_HELDOUT = ("computers", "cs", "physics", "arxiv")
# tables that hold part of their space (searched through their rows), full mode only: key -> (space, data file, dataset, target, label)
PARTIAL = {"partial_proteins": ("nasbench_graph", None, "proteins", None, "NBG proteins"),
           **{f"partial_transnas_{t}": ("transnas_micro", TRANSNAS, None, t, f"TransNAS {t}")
              for t in ("class_scene", "class_object", "jigsaw", "segmentsemantic")}}


def _plan(quick: bool) -> dict:
    if quick:
        return {"budgets": [20, 30], "nbg_budgets": [20, 30], "partial_budgets": [20], "repeats": 1, "epochs": 5, "mo_budgets": [30], "mo_repeats": 1, "sizes": [50, 100], "st_repeats": 1,
                "st_large": 1, "st_epochs": 5, "ablation_size": 60, "lr_sizes": [50], "ofa_epochs": 3, "ranker_repeats": 1, "ranker_epochs": 3,
                "ranker_train": 100, "ranker_test": 500, "motif_repeats": 1, "motif_spaces": ["nb201"], "train_archs": 1,
                "effect_sizes": [50], "effect_models": 1, "effect_repeats": 1, "ofa_budgets": [20, 30], "ofa_repeats": 1}
    return {"budgets": [25, 50, 100, 200], "nbg_budgets": [50, 100, 200], "partial_budgets": [50, 100], "repeats": 10, "epochs": 100, "mo_budgets": [100, 200], "mo_repeats": 10,
            "sizes": [50, 100, 200, 500, 1000, 2000], "st_repeats": 3, "st_large": 2, "st_epochs": 100, "ablation_size": 500,
            "lr_sizes": [100, 1000], "ofa_epochs": 100, "ranker_repeats": 2, "ranker_epochs": 200, "ranker_train": 500, "ranker_test": 5000,
            "motif_repeats": 3, "motif_spaces": ["nb201", "ofa_mbv3"], "train_archs": 2, "effect_sizes": [200, 500], "effect_models": 3,
            "effect_repeats": 10, "ofa_budgets": [50, 100, 200], "ofa_repeats": 10}


# ---------------------------------------------------------------------------------------------
# Jobs (module-level so worker processes can import them)
# ---------------------------------------------------------------------------------------------
def _quiet_setup():
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:  # pragma: no cover
        pass


def _search_settings(quick: bool):
    """The driver's default settings (what `autobuild run` runs); --quick makes the rankers tiny."""
    from . import search as S

    tiny = ["train.epochs=5", "search.options={ensemble: 1, graph_passes: 100, epochs_min: 2, epochs_max: 3}"] if quick else []
    return S.bench_settings("default", tiny)


def job_search_single(data: str, plan: dict, quick: bool = False) -> dict:
    _quiet_setup()
    from . import search as S

    bench = S.load_bench("nb201", str(Path(data) / NB201), None, None)
    objective = S.make_objective(bench, None, None)
    st = _search_settings(quick)
    out = S.run_single(bench.space, objective, list(S.SINGLE_METHODS), plan["budgets"], plan["repeats"], 0, st, lambda s: None)
    out.update(space="nb201", table=NB201, budgets=plan["budgets"], repeats=plan["repeats"], seeds=list(range(plan["repeats"])),
               settings=st.model_dump(mode="json"))
    return out


def job_search_nbg(plan: dict, dataset: str, quick: bool = False) -> dict:
    """The single-objective comparison on a NAS-Bench-Graph dataset."""
    _quiet_setup()
    from . import search as S

    bench = S.load_bench("nasbench_graph", None, None, dataset)
    objective = S.make_objective(bench, "acc", None)
    st = _search_settings(quick)
    out = S.run_single(bench.space, objective, list(S.SINGLE_METHODS), plan["nbg_budgets"], plan["repeats"], 0, st, lambda s: None)
    out.update(space="nasbench_graph", dataset=dataset, budgets=plan["nbg_budgets"], repeats=plan["repeats"], settings=st.model_dump(mode="json"))
    return out


def job_search_multi(data: str, plan: dict, device: str, quick: bool = False) -> dict:
    _quiet_setup()
    from . import search as S

    bench = S.load_bench("nb201", str(Path(data) / NB201), str(Path(data) / NB201_LAT), None)
    objective = S.make_objective(bench, None, f"acc,latency:{device}")
    st = _search_settings(quick)
    out = S.run_multi(bench.space, objective, list(S.MULTI_METHODS), plan["mo_budgets"], plan["mo_repeats"], 0, st, lambda s: None)
    out.update(objectives=objective.names, budgets=plan["mo_budgets"], repeats=plan["mo_repeats"], settings=st.model_dump(mode="json"))
    return out


OFA_SEARCH_METHODS = ("autobuild", "predictor", "tpe", "rea", "random")


def job_search_partial(data: str, plan: dict, key: str, quick: bool = False) -> dict:
    """A table that holds part of its space: every method searches its rows (``load_bench`` finds them)."""
    _quiet_setup()
    from . import search as S

    space, path, dataset, target, _ = PARTIAL[key]
    bench = S.load_bench(space, str(Path(data) / path) if path else None, None, dataset)
    objective = S.make_objective(bench, target, None)
    st = _search_settings(quick)
    out = S.run_single(bench.space, objective, list(OFA_SEARCH_METHODS), plan["partial_budgets"], plan["repeats"], 0, st, lambda s: None)
    out.update(space=space, dataset=dataset, target=objective.names[0], budgets=plan["partial_budgets"], repeats=plan["repeats"],
               seeds=list(range(plan["repeats"])), **bench.info, settings=st.model_dump(mode="json"))
    return out


def job_search_ofa(data: str, plan: dict, quick: bool = False, surrogate: str = "ofa_mbv3") -> dict:
    """The large-space comparison: OFA-MobileNetV3 (~2.2e19 subnets) against a surrogate fitted on
    the measured ImageNet table (evaluators/surrogate.py): ``ofa_mbv3`` (additive ridge) or
    ``ofa_mbv3_gbt`` (gradient-boosted trees, with interactions)."""
    _quiet_setup()
    from . import search as S

    bench = S.load_surrogate_bench(surrogate, data)
    objective = S.make_objective(bench, None, None)
    st = _search_settings(quick)
    out = S.run_single(bench.space, objective, list(OFA_SEARCH_METHODS), plan["ofa_budgets"], plan["ofa_repeats"], 0, st, lambda s: None)
    out.update(space="ofa_mbv3", table=bench.label, target=objective.names[0], budgets=plan["ofa_budgets"], repeats=plan["ofa_repeats"],
               seeds=list(range(plan["ofa_repeats"])), settings=st.model_dump(mode="json"), **bench.info)
    return out


def job_studies(data: str, plan: dict, part: str) -> dict:
    _quiet_setup()
    from .studies import bench_studies

    repeats = plan["effect_repeats"] if part == "effects" else plan["st_repeats"]  # signs per op need more repeats than means
    return bench_studies(str(Path(data) / NB201), str(Path(data) / OFA), [part], plan["sizes"], repeats, plan["st_large"],
                         plan["st_epochs"], 1e-3, plan["ofa_epochs"], plan["ablation_size"], plan["lr_sizes"], log=lambda s: None,
                         effect_sizes=plan["effect_sizes"], effect_models=plan["effect_models"])


def job_ranker(data: str, plan: dict) -> dict:
    _quiet_setup()
    from .ranker import bench_ranker

    res = bench_ranker("nb201", str(Path(data) / NB201), train_size=plan["ranker_train"], test_size=plan["ranker_test"],
                       repeats=plan["ranker_repeats"], epochs=plan["ranker_epochs"], log=lambda s: None)
    res.pop("per_repeat", None)
    return res


def job_transnas(data: str, quick: bool) -> dict:
    """The TransNAS-Bench-101 section (benchmarks/transnas.py): its own defaults, or tiny ones in --quick."""
    _quiet_setup()
    from .transnas import bench_transnas

    small = {"repeats": 1, "sizes": [10, 20], "transfer_repeats": 1, "epochs": 3} if quick else {}
    return bench_transnas(str(Path(data) / TRANSNAS), log=lambda s: None, **small)


def job_motifs(plan: dict) -> dict:
    """Scoring time of both methods, untrained ranker (cost does not depend on the weights)."""
    _quiet_setup()
    from autobuild_core.scoring import auto_n_context, score_units
    from search_spaces import get_space

    from .motifs import bench_motifs, untrained_ranker

    out = {}
    for name in plan["motif_spaces"]:
        res = bench_motifs(name, repeats=plan["motif_repeats"], threads=1, log=lambda s: None)
        space = get_space(name)
        t0 = time.perf_counter()
        score_units(untrained_ranker(space), space, method="marginal")
        res["marginal_seconds"] = time.perf_counter() - t0
        res["marginal_n_context"] = auto_n_context(sum(space.n_unit_configs()))
        out[name] = res
    return out


def job_train(plan: dict) -> dict:
    _quiet_setup()
    from evaluators.training import TrainingEvaluator

    from .train import run_bench

    cfg = TrainingEvaluator.from_budget("smoke", dataset="fashion-mnist", device="cpu").config()
    res = run_bench("nb201", cfg, n_archs=plan["train_archs"], workers=1, seed=0, progress=False, threads=1)
    res.pop("records", None)
    return res


# ---------------------------------------------------------------------------------------------
# Markdown and plots
# ---------------------------------------------------------------------------------------------
def _f(x, nd=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _how(cmd: str) -> str:
    return f"*How produced:* `autobuild bench all --out docs/results` (section equivalent: `{cmd}`)."


def _search_row(method: str, cells: dict, budgets: list[str]) -> str:
    """One method's table row: mean ± std of the best found, (regret), [evaluations used] per budget."""
    row = [f"{_f(cells[b]['best_mean'], 2)} ± {_f(cells[b]['best_std'], 2)} ({_f(cells[b]['regret_mean'], 2)}) [{cells[b]['evaluations_used']:.0f}]"
           for b in budgets]
    return f"| {method} | " + " | ".join(row) + " |"


def md_search(res: dict, out: Path, quick: bool) -> str:
    plt = _plt()
    budgets = [str(b) for b in res["budgets"]]
    lines = ["## Search at equal budget (NAS-Bench-201 CIFAR-10)", "",
             _how(f"autobuild bench search --space nb201 --table $AUTOBUILD_DATA_DIR/nb201/nb201_cifar10.csv --budgets {','.join(budgets)} "
                  f"--repeats {res['repeats']} --seed 0 --json docs/results/search_nb201.json"), "",
             f"Optimum of the table {res['optimum']:.2f}. Mean ± std over {res['repeats']} repeats (seeds 0–{res['repeats'] - 1}) of the best "
             "accuracy found, (regret), [evaluations used].", "",
             "| method | " + " | ".join(f"B={b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, cells in res["methods"].items():
        lines.append(_search_row(m, cells, budgets))
        ax.errorbar([int(b) for b in budgets], [cells[b]["best_mean"] for b in budgets], yerr=[cells[b]["best_std"] for b in budgets],
                    marker="o", capsize=3, label=m)
    ax.axhline(res["optimum"], color="k", lw=0.8, ls="--", label="optimum")
    ax.set_xlabel("evaluation budget"), ax.set_ylabel("best test accuracy (%)"), ax.set_title("NB-201 CIFAR-10 search")
    ax.legend(fontsize=7)
    fig.tight_layout(), fig.savefig(out / "search_nb201.png", dpi=110), plt.close(fig)
    lines += ["", f"![search]({out.name}/search_nb201.png)", "", verdict_single(res), ""]
    return "\n".join(lines)


def md_search_nbg(results: dict) -> str:
    """One table per NAS-Bench-Graph dataset: same protocol as the NB-201 search table."""
    lines = ["## Search at equal budget (NAS-Bench-Graph)", ""]
    for name, res in results.items():
        budgets = [str(b) for b in res["budgets"]]
        lines += [f"### {res['dataset']}", "",
                  _how(f"autobuild bench search --space nasbench_graph --dataset {res['dataset']} --target acc --budgets {','.join(budgets)} "
                       f"--repeats {res['repeats']} --seed 0 --json docs/results/{JSON_NAMES[name]}.json"), "",
                  f"Test accuracy (%) of the benchmark's {res['dataset']} entries; optimum {res['optimum']:.2f}. Mean ± std over {res['repeats']} "
                  "repeats of the best accuracy found, (regret), [evaluations used].", "",
                  "| method | " + " | ".join(f"B={b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
        lines += [_search_row(m, cells, budgets) for m, cells in res["methods"].items()]
        lines += ["", verdict_single(res), ""]
    return "\n".join(lines)


def md_compare_table(results: dict, title: str, intro: str, fmt: str = ".2f") -> str:
    """One row per table and budget (``results``: label -> a search section's JSON): every
    method's mean best, AutoBuild minus the best other method with the paired standard error, and
    a computed count of the cells."""
    lines = [f"## {title}", "", intro, "",
             "| table (optimum) | budget | autobuild | predictor | TPE | REA | random | autobuild − best other |",
             "|---|---|---|---|---|---|---|---|"]
    wins = losses = cells = outside = 0
    lost = []
    for d, res in results.items():
        meth = res["methods"]
        for i, b in enumerate(str(x) for x in res["budgets"]):
            other = best_other(meth, b, "best")
            if other is None:
                continue
            best_m, top, pair = other
            row = {m: meth[m][b]["best_mean"] for m in ("autobuild",) + BASELINES if m in meth and b in meth[m]}
            diff = row["autobuild"] - top
            shown = signed(diff)
            cells += 1
            wins += diff >= 0
            outside += all(row["autobuild"] >= v for m, v in row.items() if m not in ("autobuild", "predictor"))
            if diff < 0:
                losses += 1
                lost.append(f"{d} at {b} ({shown} against {best_m})")
            cols = {m: (f"**{v:{fmt}}**" if v >= max(top, row["autobuild"]) else f"{v:{fmt}}") for m, v in row.items()}
            first = f"{d} ({res['optimum']:{fmt}})" if i == 0 else ""
            lines.append(f"| {first} | {b} | " + " | ".join(cols.get(m, "—") for m in ("autobuild", "predictor", "tpe", "rea", "random"))
                         + f" | {shown}" + (f" ± {pair[1]:.2f} ({best_m})" if pair else f" ({best_m})") + " |")
    lines += ["", f"**Reading** (computed): AutoBuild is at or above every baseline in {wins} of {cells} cells"
              + (f"; behind in {losses}: " + ", ".join(lost) if lost else "")
              + f". Against the methods outside this project (TPE, REA, random) it is at or above them in {outside} of {cells}.", ""]
    return "\n".join(lines)


def md_search_heldout(results: dict) -> str:
    """NAS-Bench-Graph tables no setting was tuned on (``results``: dataset -> section JSON)."""
    budgets = ",".join(str(b) for b in next(iter(results.values()))["budgets"])
    intro = ("Tuning used NB-201 CIFAR-10 and NAS-Bench-Graph Cora, Citeseer, Pubmed and Photo (seeds 1000 and up); these "
             "datasets were never looked at before this run, so they show whether the defaults carry over. Each row: "
             f"`autobuild bench search --space nasbench_graph --dataset NAME --target acc --budgets {budgets} --repeats 10 --seed 0` "
             "(JSON: `docs/results/search_nasbench_graph_NAME.json`). Mean best accuracy (%) over the repeats; the last column is "
             "AutoBuild minus the best other method, ± the standard error of the per-seed differences.")
    return md_compare_table(results, "Search on tables never used for tuning (NAS-Bench-Graph)", intro)


def md_search_partial(results: dict) -> str:
    """Tables that hold part of their space (``results``: label -> section JSON); every method searches their rows."""
    intro = ("A table that lists part of its space is searched through its rows by every method (docs/evaluation.md); none of "
             "these tables was used for tuning. Commands: `autobuild bench search --space nasbench_graph --dataset proteins "
             "--budgets 50,100 --repeats 10 --seed 0` and `autobuild bench search --space transnas_micro --table "
             "$AUTOBUILD_DATA_DIR/transnas101_micro/zc_transbench101_micro.json --target TASK --budgets 50,100 --repeats 10 --seed 0` "
             "(JSON: `docs/results/search_partial_*.json`). NAS-Bench-Graph proteins holds 2,021 of 26,206 architectures, "
             "TransNAS-Bench-101 micro 711 of 4,096 cells (top-1 % for the classification tasks and jigsaw, pixel accuracy % for "
             "segmentation). Mean best over the repeats; the last column is AutoBuild minus the best other method, ± the paired "
             "standard error.")
    return md_compare_table(results, "Search on tables that hold part of their space", intro, fmt=".3f")


def md_search_ofa(res: dict, json_name: str) -> str:
    """A surrogate benchmark (its JSON is ``docs/results/<json_name>.json``): what the oracle is,
    how well it fits, then the usual table."""
    budgets = [str(b) for b in res["budgets"]]
    sur = res["surrogate"]
    cv = sur["cv"]
    name = sur.get("name", "ofa_mbv3")
    if sur.get("optimum_exact", True):
        title, model = "", "a ridge surrogate on one-hot OFA features"
        optimum = f"Optimum of the surrogate {sur['optimum']:.2f} (exact: the model is additive)"
    else:
        title = ", trees with interactions"
        model = "a gradient-boosted-tree surrogate on kernel, expansion and depth as numbers (interactions between layers and units)"
        optimum = (f"Reference optimum {sur['optimum']:.2f}: the best of a local search on the surrogate, a lower bound on its true "
                   "optimum, so a regret here can be slightly too small or negative")
    lines = [f"## Search in a space too large to tabulate (OFA-MobileNetV3, surrogate oracle{title})", "",
             _how(f"autobuild bench search --surrogate {name} --data $AUTOBUILD_DATA_DIR --methods {','.join(res['methods'])} "
                  f"--budgets {','.join(budgets)} --repeats {res['repeats']} --seed 0 --json docs/results/{json_name}.json"), "",
             f"Objective: the **predicted** ImageNet top-1 (%) of {model}, fitted on the "
             f"{sur['n_train']} measured subnets (as NAS-Bench-301 does; evaluators/surrogate.py). Space: {sur['space_size']:,} subnets "
             f"(7371^5, resolution 224). Surrogate fit, nested {cv['folds']}-fold CV: Spearman {cv['spearman']:.3f}, Kendall {cv['kendall']:.3f}, "
             f"RMSE {cv['rmse']:.3f} points (table std {cv['table_std']:.2f}), R² {cv['r2']:.3f}. {optimum}; "
             f"best measured subnet {sur['table_best_measured']:.2f}. Mean ± std over {res['repeats']} repeats "
             "of the best predicted top-1 found, (regret to that optimum), [evaluations used].", "",
             "| method | " + " | ".join(f"B={b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    lines += [_search_row(m, cells, budgets) for m, cells in res["methods"].items()]
    lines += ["", verdict_single(res), ""]
    return "\n".join(lines)


def md_tuning(tun: dict) -> str:
    """The tuning sweep (seeds 1000+, several tables) is not rerun by bench all (it would double its
    time): it comes from ``autobuild bench tune``, whose JSON this renders."""
    from .tune import markdown

    return "\n".join(["### How the AutoBuild settings were chosen (tuning seeds and tables, never the reported ones)", "",
                      "*How produced:* `autobuild bench tune --out docs/results/search_tuning.json` (not rerun by `bench all`). "
                      "Mean best accuracy over the tuning seeds; the last column averages the regret over every table and budget.", "",
                      markdown(tun), ""])


def md_multi(results: dict, out: Path) -> str:
    plt = _plt()
    lines = ["## Multi-objective: accuracy vs latency (NAS-Bench-201)", ""]
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, (dev, res) in zip(axes[0], results.items()):
        budgets = [str(b) for b in res["budgets"]]
        lines += [_how(f"autobuild bench search --space nb201 --table $AUTOBUILD_DATA_DIR/nb201/nb201_cifar10.csv --latency "
                       f"$AUTOBUILD_DATA_DIR/nb201/nb201_latency_ms.csv --objectives acc,latency:{dev} --budgets {','.join(budgets)} "
                       f"--repeats {res['repeats']} --seed 0"), "",
                  f"{res['objectives']}: reference point {[round(x, 2) for x in res['reference_point']]}, true front {res['true_front_size']} points. "
                  f"Hypervolume ratio to the true front, mean ± std over {res['repeats']} repeats.", "",
                  "| method | " + " | ".join(f"B={b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
        for m, cells in res["methods"].items():
            lines.append(f"| {m} | " + " | ".join(f"{_f(cells[b]['hv_ratio_mean'])} ± {_f(cells[b]['hv_ratio_std'])}" for b in budgets) + " |")
            ax.errorbar([int(b) for b in budgets], [cells[b]["hv_ratio_mean"] for b in budgets], yerr=[cells[b]["hv_ratio_std"] for b in budgets],
                        marker="o", capsize=3, label=m)
        ax.set_title(f"accuracy vs latency ({dev})"), ax.set_xlabel("budget"), ax.set_ylabel("HV ratio"), ax.legend(fontsize=7)
        lines += ["", verdict_multi(res), ""]
    fig.tight_layout(), fig.savefig(out / "search_nb201_mo.png", dpi=110), plt.close(fig)
    lines += [f"![multi-objective]({out.name}/search_nb201_mo.png)", ""]
    return "\n".join(lines)


def md_multi_heldout(results: dict) -> str:
    """Accuracy-latency fronts on devices no setting was tuned on: one row per device and budget,
    AutoBuild's hypervolume ratio against the best other method with the paired standard error."""
    budgets = ",".join(str(b) for b in next(iter(results.values()))["budgets"])
    lines = ["## Two objectives on devices never used for tuning (NB-201 accuracy vs latency)", "",
             "The two-objective settings were tuned on 1080 Ti, Eyeriss, FPGA and Raspberry Pi 4 latencies (seeds 1000 and up); "
             "these devices were not looked at before this run. Each row: `autobuild bench search --space nb201 --table "
             "$AUTOBUILD_DATA_DIR/nb201/nb201_cifar10.csv --latency $AUTOBUILD_DATA_DIR/nb201/nb201_latency_ms.csv --objectives "
             f"acc,latency:DEVICE --budgets {budgets} --repeats 10 --seed 0` (JSON: `docs/results/search_nb201_mo_DEVICE.json`). "
             "Hypervolume ratio to the true front, mean over the repeats; the last column is AutoBuild minus the best other "
             "method, ± the standard error of the per-seed differences.", "",
             "| device | budget | autobuild | nsga2 | random | autobuild − best other |", "|---|---|---|---|---|---|"]
    wins = cells = 0
    lost = []
    for dev, res in results.items():
        meth = res["methods"]
        for i, b in enumerate(str(x) for x in res["budgets"]):
            other = best_other(meth, b, "hv_ratio")
            if other is None:
                continue
            best_m, theirs, pair = other
            row = {m: meth[m][b]["hv_ratio_mean"] for m in ("autobuild", "nsga2", "random") if m in meth and b in meth[m]}
            diff = row["autobuild"] - theirs
            cells += 1
            wins += diff >= 0
            if diff < 0:
                lost.append(f"{dev} at {b} ({diff:+.3f} against {best_m})")
            top = max(row.values())
            fmt = {m: (f"**{v:.3f}**" if v >= top else f"{v:.3f}") for m, v in row.items()}
            lines.append(f"| {dev if i == 0 else ''} | {b} | " + " | ".join(fmt.get(m, "—") for m in ("autobuild", "nsga2", "random"))
                         + f" | {diff:+.3f}" + (f" ± {pair[1]:.3f} ({best_m})" if pair else f" ({best_m})") + " |")
    lines += ["", f"**Reading** (computed): AutoBuild's hypervolume is at or above every other method's in {wins} of {cells} cells"
              + (f"; behind in {len(lost)}: " + ", ".join(lost) if lost else "") + ".", ""]
    return "\n".join(lines)


# search sections in the order the summary plot lists them: (section, label)
FOREST_SINGLE = [("search", "NB-201 CIFAR-10"), ("nbg_cora", "NBG Cora"), ("nbg_citeseer", "NBG Citeseer"),
                 *[(f"nbg_{d}", f"NBG {d} (held out)") for d in NBG_HELDOUT],
                 ("ofa_search", "OFA surrogate"), ("ofa_search_gbt", "OFA trees surrogate"),
                 *[(k, f"{v[4]} (part of the space)") for k, v in PARTIAL.items()]]


def forest_rows(res: dict) -> tuple[list, list]:
    """(single-objective rows, two-objective rows), each ``(label, difference, standard error,
    best other method)``: AutoBuild minus the best other method per section and budget, paired by
    seed (differences in accuracy points, resp. hypervolume ratio)."""
    single, multi = [], []
    for key, label in FOREST_SINGLE:
        if key not in res or "autobuild" not in res[key].get("methods", {}):
            continue
        meth = res[key]["methods"]
        for b in (str(x) for x in res[key]["budgets"]):
            other = best_other(meth, b, "best")
            if other is None:
                continue
            best_m, theirs, pair = other
            d, se = pair or (meth["autobuild"][b]["best_mean"] - theirs, float("nan"))  # one repeat: no SE
            single.append((f"{label}, B={b}", d, se, best_m))
    for dev in MO_DEVICES + MO_HELDOUT:
        r = res.get(f"mo_{dev}")
        if not r or "autobuild" not in r.get("methods", {}):
            continue
        meth = r["methods"]
        for b in (str(x) for x in r["budgets"]):
            other = best_other(meth, b, "hv_ratio")
            if other is None:
                continue
            best_m, theirs, pair = other
            d, se = pair or (meth["autobuild"][b]["hv_ratio_mean"] - theirs, float("nan"))
            multi.append((f"{dev}{'' if dev in MO_DEVICES else ' (held out)'}, B={b}", d, se, best_m))
    return single, multi


def md_forest(res: dict, out: Path) -> str:
    """One plot of every search comparison: AutoBuild minus the best other method, ± 2 paired SE."""
    single, multi = forest_rows(res)
    if not single and not multi:
        return ""
    plt = _plt()
    panels = [(rows, unit) for rows, unit in ((single, "accuracy points"), (multi, "hypervolume ratio")) if rows]
    height = max(len(rows) for rows, _ in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 0.8 + 0.28 * height), squeeze=False,
                             gridspec_kw={"width_ratios": [1.4, 1][: len(panels)]})
    for ax, (rows, unit) in zip(axes[0], panels):
        ys = [height - 1 - i for i in range(len(rows))]  # both panels start at the top
        for y, (label, d, se, _) in zip(ys, rows):
            colour = "tab:green" if d - 2 * se > 0 else "tab:red" if d + 2 * se < 0 else "tab:grey"  # NaN SE: grey
            ax.errorbar(d, y, xerr=None if math.isnan(se) else 2 * se, fmt="o", color=colour, capsize=2, markersize=4)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(ys, [r[0] for r in rows], fontsize=7)
        ax.set_xlabel(f"AutoBuild − best other method ({unit}), ± 2 paired SE", fontsize=8)
        ax.set_ylim(-1, height)
    fig.tight_layout(), fig.savefig(out / "search_summary.png", dpi=110), plt.close(fig)
    n = len(single) + len(multi)
    ahead = sum(d >= 0 for _, d, _, _ in single + multi)
    clear_win = sum(d - 2 * se > 0 for _, d, se, _ in single + multi)
    clear_loss = [f"{label} ({d:+.2f} against {m})" for label, d, se, m in single + multi if d + 2 * se < 0]
    return "\n".join(["## Summary: every search comparison on this page", "",
                       f"![AutoBuild minus the best other method]({out.name}/search_summary.png)", "",
                       f"Each point: AutoBuild's mean best (left: accuracy; right: hypervolume ratio of the accuracy-latency front) minus "
                       "that of the best other method at the same budget (the predictor loop, AutoBuild without unit scores, included), over the same seeds, with ± 2 standard errors of the per-seed "
                       "differences; green: ahead by more than that, red: behind by more than that, grey: within it. "
                       f"**Computed:** AutoBuild is at or above the best other method in {ahead} of {n} comparisons, clearly ahead in "
                       f"{clear_win}, clearly behind in {len(clear_loss)}" + (": " + ", ".join(clear_loss) if clear_loss else "") + ".", ""])


def md_ranker(res: dict) -> str:
    hops = ", ".join(_f(h) for h in res["hop_spearman"])
    return "\n".join(["## Ranker with the library defaults (NAS-Bench-201)", "",
                      _how(f"autobuild bench ranker --space nb201 --table $AUTOBUILD_DATA_DIR/nb201/nb201_cifar10.csv --train-size {res['n_train']} "
                           f"--test-size {res['n_test']} --repeats {res['repeats']} --epochs {res['epochs']}"), "",
                      f"lr {res['lr']:g}, {res['epochs']} epochs, {res['n_train']} training / {res['n_test']} test cells, {res['repeats']} repeats.", "",
                      "| prediction Spearman | Kendall | hop 0..4 norm Spearman | ridge (one-hot) | s per training |", "|---|---|---|---|---|",
                      f"| {_f(res['pred_spearman'])} ± {_f(res['pred_spearman_std'])} | {_f(res['pred_kendall'])} | {hops} | "
                      f"{_f(res['baseline_ridge_spearman'])} | {_f(res['train_seconds'], 1)} |", ""])


def md_size(res: dict, out: Path) -> str:
    plt = _plt()
    sz = res["size"]
    sizes = list(sz)
    st = res["settings"]
    lines = ["## Ranker vs training-set size (NAS-Bench-201)", "",
             _how(f"autobuild bench studies --parts size --sizes {','.join(sizes)} --repeats {st['repeats']} --large-repeats {st['large_repeats']} "
                  f"--epochs {st['epochs']} --lr {st['lr']:g}"), "",
             f"Training cells drawn at random (seed r for repeat r), 3,000 other cells as test set; {st['epochs']} epochs at lr {st['lr']:g} "
             "(see the learning-rate table). Mean ± std over repeats.", "",
             "| n train | repeats | prediction Spearman | final-hop norm Spearman | hop 0..4 | ridge | s per training |", "|---|---|---|---|---|---|---|"]
    for n in sizes:
        a = sz[n]
        lines.append(f"| {n} | {a['repeats']} | {_f(a['pred_spearman'])} ± {_f(a['pred_spearman_std'])} | {_f(a['hop_spearman'][-1])} ± "
                     f"{_f(a['hop_spearman_std'][-1])} | {', '.join(_f(h, 2) for h in a['hop_spearman'])} | {_f(a['ridge_spearman'])} | "
                     f"{_f(a['train_seconds'], 1)} |")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    x = [int(n) for n in sizes]
    ax = axes[0]
    for key, label in (("pred_spearman", "ranker prediction"), ("ridge_spearman", "ridge one-hot")):
        ax.errorbar(x, [sz[n][key] for n in sizes], yerr=[sz[n][key + "_std"] for n in sizes], marker="o", capsize=3, label=label)
    for h in range(len(sz[sizes[0]]["hop_spearman"])):
        ax.plot(x, [sz[n]["hop_spearman"][h] for n in sizes], ls=":", marker=".", label=f"hop {h} norm")
    ax.set_xscale("log"), ax.set_xlabel("training cells"), ax.set_ylabel("Spearman on test cells"), ax.legend(fontsize=7)
    ax.set_title("ranker vs training-set size")
    ax = axes[1]
    for method in ("paper", "marginal"):
        for u in ("0", "1", "2"):
            ys = [sz[n][f"units_{method}"][u]["spearman"][0] for n in sizes]
            ax.plot(x, ys, marker="o" if method == "marginal" else "x", ls="-" if method == "marginal" else "--", label=f"{method} node{int(u) + 1}")
    ax.set_xscale("log"), ax.set_xlabel("training cells"), ax.set_ylabel("Spearman vs ground-truth marginal"), ax.legend(fontsize=7)
    ax.set_title("unit-configuration scores")
    fig.tight_layout(), fig.savefig(out / "studies_size.png", dpi=110), plt.close(fig)
    lines += ["", f"![size]({out.name}/studies_size.png)", "",
              "### Interpretability against NAS-Bench-201 ground truth", "",
              "For every ranker above: Spearman between each unit's configuration scores and the configurations' ground-truth marginals "
              "(mean accuracy of all 15,625 cells containing the configuration), for the paper's scoring and the marginal scoring "
              "(64 contexts) of the *same* rankers; in brackets the ground-truth rank of each method's top-1 configuration "
              "(1 = truly best; mean over repeats). NB-201 units have one depth each (node j has j incoming edges), so 'within depth' "
              "equals 'overall' here. Last column: Spearman between the FE-MLP's per-op scores and each op's marginal effect "
              "(5 ops).", "",
              "| n train | node1 paper | node1 marginal | node2 paper | node2 marginal | node3 paper | node3 marginal | op importance |",
              "|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        a = sz[n]
        cells = []
        for u in ("0", "1", "2"):
            for method in ("paper", "marginal"):
                c = a[f"units_{method}"][u]
                cells.append(f"{_f(c['spearman'][0], 2)} ± {_f(c['spearman'][1], 2)} [{c['gt_rank_of_top1']:.1f}]")
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {_f(a['op_importance_spearman'], 2)} ± {_f(a['op_importance_spearman_std'], 2)} |")
    eff = res.get("nb201_op_effect", {})
    if eff:
        order = sorted(eff, key=lambda o: -eff[o])
        lines += ["", "Ground-truth op effects (mean accuracy with the op on an edge, averaged over edges, minus the table mean): "
                  + ", ".join(f"{o} {eff[o]:+.2f}" for o in order) + ".", ""]
        first = sz[sizes[-1]]["runs"][0]["op_importance"]
        lines += [f"FE-MLP op order of the first {sizes[-1]}-cell ranker: {' > '.join(first['fe_order'])} "
                  "(the FE-MLP score is |scalar|, a magnitude: an op that *hurts* can score high).", ""]
    return "\n".join(lines)


def md_lr(res: dict) -> str:
    lines = ["## Learning rate: the paper's 1e-4 vs 1e-3 (NAS-Bench-201)", "",
             _how(f"autobuild bench studies --parts lr --lr-sizes {','.join(str(s) for s in res['settings']['lr_sizes'])} "
                  f"--epochs {res['settings']['epochs']} --repeats {res['settings']['repeats']}"), "",
             "| n train | lr | prediction Spearman | final-hop Spearman |", "|---|---|---|---|"]
    for a in res["lr"].values():
        lines.append(f"| {a['n_train']} | {a['lr']:g} | {_f(a['pred_spearman'])} ± {_f(a['pred_spearman_std'])} | {_f(a['hop_spearman'][-1])} |")
    return "\n".join(lines + [""])


def md_ablation(res: dict, out: Path) -> str:
    plt = _plt()
    ab = res["ablation"]
    st = res["settings"]
    lines = ["## Ablations (NAS-Bench-201)", "",
             _how(f"autobuild bench studies --parts ablation --ablation-size {st['ablation_size']} --repeats {st['repeats']} --epochs {st['epochs']}"), "",
             f"{st['ablation_size']} training cells, 3,000 test cells, {st['epochs']} epochs at lr {st['lr']:g}, mean ± std over {st['repeats']} repeats.", "",
             "| variant | prediction Spearman | hop 0..4 norm Spearman (mean) | hop-4 std |", "|---|---|---|---|"]
    for name, a in ab.items():
        lines.append(f"| {name} | {_f(a['pred_spearman'])} ± {_f(a['pred_spearman_std'])} | {', '.join(_f(h, 2) for h in a['hop_spearman'])} | "
                     f"{_f(a['hop_spearman_std'][-1], 3)} |")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(ab)
    ax.bar(range(len(names)), [ab[n]["pred_spearman"] for n in names], yerr=[ab[n]["pred_spearman_std"] for n in names], capsize=3, label="prediction")
    ax.plot(range(len(names)), [ab[n]["hop_spearman"][-1] for n in names], "ko", label="final-hop norm")
    ax.set_xticks(range(len(names)), [n.split(" (")[0] for n in names], rotation=20, fontsize=8)
    ax.set_ylabel("Spearman"), ax.legend(fontsize=8), ax.set_title("ablations")
    fig.tight_layout(), fig.savefig(out / "studies_ablation.png", dpi=110), plt.close(fig)
    return "\n".join(lines + ["", f"![ablation]({out.name}/studies_ablation.png)", ""])


def md_ofa(res: dict, out: Path) -> str:
    plt = _plt()
    o = res["ofa"]
    sp = o["split"]
    lines = ["## OFA-MobileNetV3 on ImageNet", "",
             _how(f"autobuild bench studies --parts ofa --ofa-epochs {res['settings']['ofa_epochs']} --repeats {res['settings']['repeats']}"), "",
             f"{o['n_archs']} distinct subnets with measured top-1 (from evolutionary searches: clustered at 73.7–77.5 %). "
             f"Ranker {sp['epochs']} epochs at lr {sp['lr']:g}.", "",
             "| 90/10 split | prediction Spearman | hop 0..4 norm Spearman | ridge (one-hot) |", "|---|---|---|---|",
             f"| {sp['n_train']} / {sp['n_test']}, {sp['repeats']} repeats | {_f(sp['pred_spearman'])} ± {_f(sp['pred_spearman_std'])} | "
             f"{', '.join(_f(h, 2) for h in sp['hop_spearman'])} | {_f(sp['baseline_ridge_spearman'])} ± {_f(sp['baseline_ridge_spearman_std'])} |", "",
             "Which expansion ratio e and kernel size k score highest, per unit (a ranker trained on all subnets; each value's score is "
             "the mean score of the unit's configurations weighted by the share of their layers holding that value; 'data' is the same "
             "average of measured top-1 over the subnets, biased by how the search sampled them):", "",
             "| unit | paper: best e / best k | marginal: best e / best k | data: best e / best k | marginal top-1 configuration (e/k per layer) |",
             "|---|---|---|---|---|"]
    for u in range(len(o["methods"]["paper"]["per_unit"])):
        p, m = o["methods"]["paper"]["per_unit"][u], o["methods"]["marginal"]["per_unit"][u]
        d = o["data_value_means"][u]
        de, dk = max(d["e"], key=d["e"].get), max(d["k"], key=d["k"].get)
        lines.append(f"| {u} | {p['best_e']} / {p['best_k']} | {m['best_e']} / {m['best_k']} | {de} / {dk} | {m['top1_config']} |")
    lines += ["", "Marginal per-value scores (predicted top-1 %, higher is better):", "",
              "| unit | e=3 | e=4 | e=6 | k=3 | k=5 | k=7 |", "|---|---|---|---|---|---|---|"]
    for u, m in enumerate(o["methods"]["marginal"]["per_unit"]):
        ev, kv = m["values"]["e"], m["values"]["k"]
        lines.append(f"| {u} | " + " | ".join(_f(ev[str(v)] if str(v) in ev else ev.get(v), 2) for v in (3, 4, 6)) + " | "
                     + " | ".join(_f(kv[str(v)] if str(v) in kv else kv.get(v), 2) for v in (3, 5, 7)) + " |")
    fe = [r for r in o["fe_mlp"] if r["feature"] in ("e", "k")]
    lines += ["", "FE-MLP global read-out (|scalar| per value; one value per feature for the whole network, not per unit): "
              + ", ".join(f"{r['feature']}={r['value']}: {r['score']:.3f}" for r in fe) + ".", "",
              "The authors' check, both scorings (Spearman of the unit score of a subnet's unit-u configuration vs the subnet's top-1, "
              "among subnets whose unit u has depth d; in-sample):", "",
              "| unit | depth | n | paper | marginal |", "|---|---|---|---|---|"]
    for a, b in zip(o["methods"]["paper"]["authors_check"], o["methods"]["marginal"]["authors_check"]):
        lines.append(f"| {a['unit']} | {a['depth']} | {a['n']} | {_f(a['spearman'], 2)} | {_f(b['spearman'], 2)} |")
    lines += ["", "Top-1 build vs its own top-5 pruned space (5^5 = 3,125 architectures at the best-scored resolution), ranked by "
              "the same ranker's prediction (1 = the space's best by the predictor):", "",
              "| scoring | rank of the build | predicted top-1 of the build | best predicted in the pruned space | scoring time (s) |", "|---|---|---|---|---|"]
    for method in ("paper", "marginal"):
        b = o["methods"][method]["build"]
        lines.append(f"| {method} | {b['rank_in_pruned']} / {b['pruned_size']} | {_f(b['predicted_top1'], 2)} | {_f(b['pruned_pred_max'], 2)} | "
                     f"{_f(o['methods'][method]['scoring_seconds'], 1)} |")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, (name, vals) in zip(axes, (("e", (3, 4, 6)), ("k", (3, 5, 7)))):
        for v in vals:
            ys = [m["values"][name].get(str(v), m["values"][name].get(v)) for m in o["methods"]["marginal"]["per_unit"]]
            ax.plot(range(len(ys)), ys, marker="o", label=f"{name}={v}")
        ax.set_xlabel("unit"), ax.set_ylabel("marginal score (pred. top-1 %)"), ax.legend(fontsize=8), ax.set_title(f"OFA-MBv3: {name} per unit")
    fig.tight_layout(), fig.savefig(out / "studies_ofa_values.png", dpi=110), plt.close(fig)
    return "\n".join(lines + ["", f"![ofa]({out.name}/studies_ofa_values.png)", ""])


def md_motifs(res: dict) -> str:
    lines = ["## Scoring every unit configuration (time, one CPU thread)", "",
             _how("autobuild bench motifs --space nb201|ofa_mbv3 --threads 1"), "",
             "| space | configurations | paper scoring (s) | marginal scoring (s) | marginal contexts |", "|---|---|---|---|---|"]
    for name, r in res.items():
        lines.append(f"| {name} | {r['n_configs']} | {_f(r['seconds'], 2)} | {_f(r['marginal_seconds'], 2)} | {r['marginal_n_context']} |")
    return "\n".join(lines + ["", "The authors' code: about 70 s for OFA-MobileNetV3's 36,855 configurations on a 2-core CPU (method.md §6).", ""])


def md_train(res: dict) -> str:
    s = res["settings"]
    acc = res["test_acc"]
    return "\n".join(["## Training evaluator throughput (CPU, tiny budget)", "",
                      _how(f"autobuild bench train --space nb201 --budget smoke --archs {res['n_archs']} --device cpu --threads 1"), "",
                      "| space | dataset | archs | epochs | n_train | archs/hour | s per arch | test acc mean |", "|---|---|---|---|---|---|---|---|",
                      f"| {res['space']} | {s['dataset']} | {res['n_archs']} | {s['epochs']} | {s['n_train']} | {_f(res['archs_per_hour'], 1)} | "
                      f"{_f(res['seconds_per_arch']['mean'], 1)} | {_f(acc['mean'], 2)} |", ""])


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
JSON_NAMES = {**{f"nbg_{d}": f"search_nasbench_graph_{d}" for d in NBG_DATASETS + NBG_HELDOUT}, "search": "search_nb201", **{f"mo_{d}": f"search_nb201_mo_{d}" for d in MO_DEVICES + MO_HELDOUT}, **{k: f"search_{k}" for k in PARTIAL},
              "size": "studies_size", "lr": "studies_lr", "ablation": "studies_ablation", "ofa": "studies_ofa", "ranker": "ranker_nb201_paper_settings",
              "motifs": "motifs", "train": "train_cpu", "transnas": "transnas", "effects": "studies_effects",
              "ofa_search": "search_ofa_mbv3_surrogate", "ofa_search_gbt": "search_ofa_mbv3_gbt_surrogate"}


def _save_section(out: Path, name: str, result: dict) -> None:
    """A finished section's JSON, written at once: an interrupted run keeps it (rerun the rest with --only)."""
    (out / f"{JSON_NAMES.get(name, name)}.json").write_text(json.dumps(_clean(result), indent=1))


def _load_results(out: Path):
    """Results of an earlier run, read back from its JSON files (``--render-only``)."""
    results = {name: json.loads((out / f"{fname}.json").read_text()) for name, fname in JSON_NAMES.items() if (out / f"{fname}.json").is_file()}
    meta = json.loads((out / "all_meta.json").read_text()) if (out / "all_meta.json").is_file() else {}
    return results, meta.get("skipped", {}), float(meta.get("seconds", float("nan")))


def bench_all(out: str | os.PathLike, quick: bool = False, data: str | os.PathLike | None = None, jobs: int = 2, log=print,
              render_only: bool = False, only: list[str] | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md_path = out.with_suffix(".md")
    data = Path(data or os.environ.get("AUTOBUILD_DATA_DIR") or "/nonexistent-data-dir")  # no folder: the table sections become notes
    plan = _plan(quick)
    have_nb = (data / NB201).is_file()
    have_lat = (data / NB201_LAT).is_file()
    have_ofa = (data / OFA).is_file()
    t0 = time.perf_counter()
    results: dict = {}
    skipped: dict = {}

    def timed(name, fn, *a):
        ts = time.perf_counter()
        r = fn(*a)
        _save_section(out, name, r)
        log(f"  {name} done in {time.perf_counter() - ts:.0f}s")
        return r

    if render_only or only:
        results, skipped, total = _load_results(out)
    if not render_only:
        if not only:
            log("bench all: timing sections (alone)")
            results["motifs"] = timed("motifs", job_motifs, plan)
            try:
                results["train"] = timed("train", job_train, plan)
            except Exception as exc:  # a missing dataset must not cost the other sections
                skipped["train"] = f"training evaluator unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"

        tasks = []
        if have_nb:
            tasks += [("search", job_search_single, (str(data), plan, quick)), ("size", job_studies, (str(data), plan, "size")),
                      ("ablation", job_studies, (str(data), plan, "ablation")), ("lr", job_studies, (str(data), plan, "lr")),
                      ("ranker", job_ranker, (str(data), plan))]
            if have_lat:
                tasks += [(f"mo_{d}", job_search_multi, (str(data), plan, d, quick)) for d in MO_DEVICES + (() if quick else MO_HELDOUT)]
            else:
                skipped["multi"] = f"latency table {data / NB201_LAT} not found"
        else:
            skipped["nb201"] = f"NAS-Bench-201 table {data / NB201} not found: search, ranker, size, lr and ablation sections skipped"
        if have_ofa:
            tasks.append(("ofa", job_studies, (str(data), plan, "ofa")))
            tasks.append(("ofa_search", job_search_ofa, (str(data), plan, quick)))
            if not quick:  # the same plumbing as ofa_search; tests/test_surrogate.py covers the tree model
                tasks.append(("ofa_search_gbt", job_search_ofa, (str(data), plan, quick, "ofa_mbv3_gbt")))
        else:
            skipped["ofa"] = f"OFA-MobileNetV3 table {data / OFA} not found"
        tasks += [(f"nbg_{d}", job_search_nbg, (plan, d, quick)) for d in NBG_DATASETS + (() if quick else NBG_HELDOUT)]
        if have_nb:
            tasks.append(("effects", job_studies, (str(data), plan, "effects")))
        # quick mode: proteins alone (in the wheel, no data folder), the plumbing of every partial section
        tasks += [(k, job_search_partial, (str(data), plan, k, quick)) for k, v in PARTIAL.items()
                  if (v[1] is None or (data / v[1]).is_file()) and (not quick or k == "partial_proteins")]
        if (data / TRANSNAS).is_file():
            tasks.append(("transnas", job_transnas, (str(data), quick)))
        else:
            skipped["transnas"] = f"TransNAS-Bench-101 file {data / TRANSNAS} not found"
        order = ["search", "ofa_search", "ofa_search_gbt", *[f"mo_{d}" for d in MO_HELDOUT], "size", "transnas", "mo_2080ti_1", "mo_pixel3",
                 *PARTIAL, *[f"nbg_{d}" for d in NBG_HELDOUT], "ablation", "ofa", "lr", "ranker"] + [f"nbg_{d}" for d in NBG_DATASETS]  # longest first
        tasks.sort(key=lambda t: order.index(t[0]) if t[0] in order else len(order))
        if only:
            tasks = [t for t in tasks if t[0] in only]
        log(f"bench all: {len(tasks)} jobs on {jobs} worker(s)")
        if jobs > 1 and len(tasks) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
                futs = {pool.submit(fn, *a): (name, time.perf_counter()) for name, fn, a in tasks}
                for f in as_completed(futs):
                    name, ts = futs[f]
                    results[name] = f.result()
                    _save_section(out, name, results[name])
                    log(f"  {name} done ({time.perf_counter() - t0:.0f}s since start)")
        else:
            for name, fn, a in tasks:
                results[name] = timed(name, fn, *a)
    prev = json.loads((out / "all_meta.json").read_text()) if (out / "all_meta.json").is_file() else {}
    meta = prev
    if not render_only:
        if only:  # the full run's time stays; the rerun sections are listed beside it
            meta = {**prev, "skipped": skipped,
                    "reruns": [*prev.get("reruns", []), {"sections": sorted(only), "seconds": round(time.perf_counter() - t0, 1), "jobs": jobs}]}
        else:
            meta = {"seconds": time.perf_counter() - t0, "jobs": jobs, "quick": quick, "skipped": skipped}
        total = float(meta.get("seconds", float("nan")))  # each section's JSON was written when it finished
        (out / "all_meta.json").write_text(json.dumps(meta, indent=1))
    jobs = int(meta.get("jobs", jobs))
    reruns = "".join(f"; sections rerun since with `--only {','.join(r['sections'])}`: {r['seconds'] / 60:.1f} min" for r in meta.get("reruns", []))
    res = json.loads(json.dumps(_clean(results)))  # one JSON round trip: the Markdown reads what the files hold
    parts = ["# Results", "",
             f"Every number, table and plot on this page is produced by `autobuild bench all --out docs/results{' --quick' if quick else ''}` "
             f"(last full run: {total / 60:.1f} min, {jobs} worker process(es) × 1 torch thread{reruns}) from the benchmark tables in `--data DIR` (or `$AUTOBUILD_DATA_DIR`: `nb201/nb201_cifar10.csv`, `nb201/nb201_latency_ms.csv`, `ofa_mbv3_imagenet/ofa_mbv3_w10_top1.jsonl`, `transnas101_micro/zc_transbench101_micro.json`; NAS-Bench-Graph comes with its PyPI package); raw numbers are "
             "in `docs/results/*.json`. The one exception is the search-tuning table, whose own commands are given with it. Reported "
             "searches use seeds 0–9; every setting that was tuned was tuned on separate seeds (1000 and up)." + (" **Quick mode: tiny budgets, the numbers are only a plumbing check.**" if quick else ""), ""]
    if skipped:
        parts += ["Skipped sections:", ""] + [f"- {k}: {v}" for k, v in skipped.items()] + [""]
    note = (lambda key: NOTES.get(key, "")) if not quick else (lambda key: "")
    forest = md_forest(res, out)
    if forest:
        parts.append(forest)
    if "search" in res:
        parts.append(md_search(res["search"], out, quick))
        parts.append(SEARCH_NOTES if not quick else "")
        tuning = out / "search_tuning.json"
        if tuning.is_file() and not quick:
            parts.append(md_tuning(json.loads(tuning.read_text())))
    nbg = {f"nbg_{d}": res[f"nbg_{d}"] for d in NBG_DATASETS if f"nbg_{d}" in res}
    if nbg:
        parts.append(md_search_nbg(nbg))
    heldout = {d: res[f"nbg_{d}"] for d in NBG_HELDOUT if f"nbg_{d}" in res}
    if heldout:
        parts.append(md_search_heldout(heldout))
    if "ofa_search" in res:
        parts += [md_search_ofa(res["ofa_search"], JSON_NAMES["ofa_search"]), note("ofa_search")]
    if "ofa_search_gbt" in res:
        parts += [md_search_ofa(res["ofa_search_gbt"], JSON_NAMES["ofa_search_gbt"]), note("ofa_search_gbt")]
    partial = {v[4]: res[k] for k, v in PARTIAL.items() if k in res}
    if partial:
        parts.append(md_search_partial(partial))
    mo = {d: res[f"mo_{d}"] for d in MO_DEVICES if f"mo_{d}" in res}
    if mo:
        parts.append(md_multi(mo, out))
    mo_heldout = {d: res[f"mo_{d}"] for d in MO_HELDOUT if f"mo_{d}" in res}
    if mo_heldout:
        parts.append(md_multi_heldout(mo_heldout))
    if "ranker" in res:
        parts += [md_ranker(res["ranker"]), note("ranker")]
    if "size" in res and "size" in res["size"]:
        parts += [md_size(res["size"], out), note("size")]
    if "effects" in res and "effects" in res["effects"]:
        from .studies import md_effects

        parts += [md_effects(res["effects"]["effects"]), note("effects")]
    if "lr" in res and "lr" in res["lr"]:
        parts += [md_lr(res["lr"]), note("lr")]
    if "ablation" in res and "ablation" in res["ablation"]:
        parts += [md_ablation(res["ablation"], out), note("ablation")]
    if "ofa" in res and "ofa" in res["ofa"]:
        parts += [md_ofa(res["ofa"], out), note("ofa")]
    if "transnas" in res:
        from .transnas import command, markdown

        parts.append(markdown(res["transnas"], out, _how(command(res["transnas"])), readings=not quick))
    if "motifs" in res:  # absent when --only reran sections into a fresh --out
        parts += [md_motifs(res["motifs"]), note("motifs")]
    if "train" in res:
        parts.append(md_train(res["train"]))
    md_path.write_text("\n".join(parts).rstrip() + "\n")
    log(f"wrote {md_path}" + (" from the JSON in " + str(out) if render_only else f" and {out}/ in {total:.0f}s"))
    return md_path


# Hand-written interpretation of the full-run search numbers; kept next to the code that
# regenerates them so that a rerun shows the text beside the numbers it talks about.
SEARCH_NOTES = """Methods (`benchmarks/search.py`, settings in each JSON): **autobuild** is the driver `autobuild run` runs with its
defaults: stratified seed cells, then rounds that retrain a ranker ensemble on everything evaluated, score the units, prune the
space with the scores and pick each batch by an upper confidence bound plus model-free mutations of the best (docs/search.md).
**autobuild-build** is the seeds plus the direct build only. **predictor** is the same loop without unit scores (the ablation
that shows what module scores add). **random / rea / tpe**: the registered baselines over the whole space. Every method spends
the same number of unique table lookups; seeds and built architectures count.
"""


# Hand-written readings of the full-run numbers, printed under each section (not in --quick).
# They quote numbers from the run they were written against; a rerun that moves a number past
# what the text says needs the text updated.
NOTES: dict = {
    "ranker": """The ridge column is a one-hot linear baseline on the same cells; hop norms are what the unit scores read, so their
Spearman says how far the unit scores can be trusted.
""",
    "size": """Readings. The ranker beats the one-hot ridge at every size (by 0.12–0.15 from 500 cells on, by 0.15 at 50, by 0.07 at 200);
its final-hop embedding norm ranks test cells at least as well as the prediction head at every size (0.74 at 50 cells, 0.91 at
2,000). Hop 0, the FE-MLP alone, ranks nothing (−0.14 to 0.16).

Unit scores. With this project's ranker the paper's scoring does *not* show the authors' weakness on NB-201: from 100 cells
on its node-3 Spearman is 0.77–0.90 and its top-1 configuration is the true best. (An earlier measurement, 0.28–0.37 for node 3,
used the search benchmark's rankers before NB-201 graphs stopped routing information through `none` edges.) Marginal scoring
orders the menus as well or better from 500 cells on (node 2: 0.93–0.98 vs 0.84–0.93; node 3: 0.92–0.98 vs 0.80–0.90), node 1
equally well or better at every size, and is mixed at 50–200 cells (node 2 better at 50 and 100, node 3 worse at 50 and 100);
its top-1 is often not the true best (mean ground-truth rank up to 10 at 50 cells, 1–7 from 500 on): averaged predictions are
smooth near the top. The FE-MLP per-op read-out does **not** reproduce the ground-truth op order: its Spearman with the op
effects is −0.27 to 0.00 with a spread of 0.8–1.0 over repeats, i.e. its sign changes from seed to seed. The read-out is a
magnitude, |scalar|, and the FE-MLP only has to make ops distinguishable for the GNN; `none`, the most harmful op, often gets
the largest one. On NB-201, per-value FE-MLP scores are not an importance order; configuration scores are.
""",
    "effects": """Readings. Four of the five op effects get their true sign in every repeat from 200 cells on (avg_pool_3x3 in 95% of
the 20 tuning repeats at 200). skip_connect (+0.12, the smallest effect) does not, and from random cells it cannot: a sample of
200 or 500 cells gives it the true sign 57–59% of the time (table above), and the read-out's point estimate does about as well
(60%). What a reader should act on is the sign the read-out *states* (its interval excludes zero): larger effects are stated
in 30–80% of repeats and were never stated wrong; skip's sign was stated twice in the 10 repeats at 200 cells, both times
wrong (two intervals from three ensemble members whose spread happened to be small). On 20 tuning repeats (the same command
with `--seed 1000 --repeats 20`) it was stated in none and no stated sign of any op was wrong, so over the 30 repeats 2 wrong
statements of skip's sign in 60 read-outs: about what a 95% interval allows, not evidence that it is too narrow.
""",
    "lr": """At the same 100 epochs, lr 1e-3 beats the paper's 1e-4 at both sizes, by 0.29 at 100 cells and 0.08 at 1,000 (few cells ->
few optimiser steps per epoch). Studies, searches and the library default therefore use 1e-3; the paper's 1e-4 stays available as `--preset paper`.
""",
    "ablation": """Without the ranking loss the prediction is about as good (0.82 vs 0.83) but hop norms stop meaning anything (final hop −0.18
vs 0.85): the ranking term is what makes module scores interpretable. The GNN type matters little at 500 cells (0.83–0.84);
GraphConv and GIN give slightly higher, steadier hop Spearman than GATv2. Hidden 16 is worse and unsteady (0.74 ± 0.09);
64 is not clearly better than 32 (0.84 ± 0.04 vs 0.83 ± 0.05).
""",
    "ofa_search": """Readings. This is where unit scores have to pay off: the computed reading above compares AutoBuild with
the same loop without pruning (predictor) budget by budget. The oracle is a surrogate that is additive
over slots, the structure unit scoring assumes, so this is a favourable case (the tree surrogate below is the harder test); values above the best measured subnet are the
model's extrapolation, not ImageNet accuracy (docs/evaluation.md, "Surrogate benchmarks").
""",
    "ofa_search_gbt": """Readings. The same comparison against gradient-boosted trees fitted on the same table: a surrogate with interactions
between layers and units (an additive fit explains about 95 % of its variance on random subnets), so per-unit scores no longer
match the oracle's structure exactly. The reference optimum is the best of a local search, a lower bound, and trees do not
extrapolate: the surrogate's range ends near the best measured subnet, so regrets are small in absolute terms
(docs/evaluation.md, "Surrogate benchmarks").
""",
    "motifs": """Both with an untrained ranker (cost does not depend on the weights), the machine otherwise idle. Marginal scoring pushes
n_context whole networks per configuration through the ranker (64 per NB-201 configuration, 4 per OFA one: about 147,000
graphs), 6x (OFA) to 30x (NB-201) the paper scoring's cost and still well under the authors' 70 s. Inside the OFA study,
with a second job on the other core, the same scoring of a trained ranker took 3.0 s.
""",
    "ofa": """Readings. The ranker fits (0.947 on held-out subnets) but a one-hot ridge does as well (0.965) on this clustered data.
Per unit, marginal scoring prefers expansion 6 everywhere (the data's per-value means agree in 4 of 5 units); its kernel-size
differences are at most 0.02 predicted points and should not be read as a preference. The paper scoring's choice e=3, k=3 in
unit 0 disagrees with both. The authors' weakness reproduces with the paper scoring: its top-1 build ranks 1,867th of the
3,125 architectures of its own top-5 pruned space by the same predictor. With marginal scoring the build ranks 5th (earlier
runs of this study: 163rd): close to the space's best, not first, because a sum of per-unit marginals ignores interactions
between units. The depth-wise check is mixed for both scorings (in-sample, groups of 35 to 603 subnets; negative only for the
paper scoring, unit 0, depth 4).
""",
}


def run(args) -> int:
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    bench_all(args.out, quick=args.quick, data=args.data, jobs=args.jobs, render_only=args.render_only, only=only)
    return 0


def register(sub) -> None:
    p = sub.add_parser("all", help="regenerate every results table and plot into docs/results.md", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/results", help="folder for JSON and PNG; the Markdown goes to OUT.md")
    p.add_argument("--quick", action="store_true", help="tiny budgets (1-2 minutes): a plumbing check, not results")
    p.add_argument("--data", help="folder of the benchmark tables (default $AUTOBUILD_DATA_DIR; sections whose table is missing become notes)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes for the independent sections (default 2)")
    p.add_argument("--render-only", action="store_true", help="rewrite the Markdown and plots from the JSON already in --out (no runs)")
    p.add_argument("--only", help="comma-separated sections to rerun (e.g. search,nbg_cora,mo_pixel3); the others are read from --out")
    p.set_defaults(func=run, interrupt_hint="the sections that finished are written to --out; rerun the others with --only.")
