"""``autobuild bench studies``: what the ranker learns, how much data it needs, and whether its
scores agree with ground truth that was not learned.

Parts (``--parts``): ``size`` (Spearman and read-outs vs training-set size, beside ridge), ``lr``
(1e-4 vs 1e-3), ``ablation`` (ranking loss, GNN type, width), ``pruned`` (best cell inside the
pruned space; tuning seeds), ``effects`` (op-effect read-out vs the NB-201 ground truth) and
``ofa`` (OFA-MobileNetV3 ImageNet subnets). What each part measures and why: docs/ranker.md
("Studies").
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from search_spaces.errors import ConfigError

from .common import labelled_table, mean_std, write_json

DEFAULT_SIZES = (50, 100, 200, 500, 1000, 2000)
ABLATIONS = {
    "default (gatv2, hidden 32, rank loss)": {},
    "no ranking loss": {"rank_weight": 0.0},
    "graphconv": {"gnn": "graphconv"},
    "gin": {"gnn": "gin"},
    "hidden 16": {"hidden": 16},
    "hidden 64": {"hidden": 64},
}


# ---------------------------------------------------------------------------------------------
# NB-201 ground truth
# ---------------------------------------------------------------------------------------------
def _cfg_key(cfg) -> str:
    """Same JSON as score_units' ``config`` column."""
    return json.dumps([list(layer) for layer in cfg])


class NB201Truth:
    """The full table and its exact marginals."""

    def __init__(self, table: str):
        from .common import targets

        self.space, self.archs, metrics = labelled_table("nb201", table)
        self.y = targets(metrics, None)[0]  # the table's accuracy column (cifar10_test_acc in the shared table)
        self.unit_marginal: list[dict] = []
        for u in range(len(self.space.units)):
            sums: dict = {}
            for a, v in zip(self.archs, self.y):
                k = _cfg_key(a.units[u])
                s = sums.setdefault(k, [0.0, 0])
                s[0] += v
                s[1] += 1
            self.unit_marginal.append({k: s / n for k, (s, n) in sums.items()})
        from search_spaces.nb201 import OPS

        ops = np.array([self.space.edge_ops(a) for a in self.archs])  # [n, 6]
        self.edge_ops = ops
        self.op_effect = self.sample_op_effects(np.arange(len(self.y)))

    def sample_op_effects(self, idx: np.ndarray) -> dict:
        """The op effects (mean accuracy with the op on an edge, averaged over edges, minus the
        mean) measured on the cells ``idx`` only; on all cells it is the ground truth."""
        from search_spaces.nb201 import OPS

        y, ops = self.y[idx], self.edge_ops[idx]
        out = {}
        for op in OPS:
            per_edge = [y[ops[:, e] == op].mean() for e in range(ops.shape[1]) if (ops[:, e] == op).any()]
            out[op] = float(np.mean(per_edge) - y.mean()) if per_edge else float("nan")
        return out

    def sign_limit(self, n: int, draws: int = 2000, seed: int = 0) -> dict:
        """Per op, the share of ``draws`` random samples of ``n`` cells whose measured op effect has
        the ground truth's sign: how often the data alone can tell the sign, which bounds what any
        read-out trained on ``n`` random cells can be expected to do."""
        rng = np.random.default_rng(seed)
        hits = {op: 0 for op in self.op_effect}
        for _ in range(draws):
            eff = self.sample_op_effects(rng.choice(len(self.y), size=n, replace=False))
            for op, v in eff.items():
                hits[op] += bool(np.sign(v) == np.sign(self.op_effect[op]))
        return {op: h / draws for op, h in hits.items()}


def unit_score_checks(scores, truth: NB201Truth) -> list[dict]:
    """Spearman of unit scores vs the ground-truth marginals, per unit, overall and per depth."""
    from autobuild_core.metrics import spearman

    rows = []
    for u in sorted(scores["unit"].unique()):
        sub = scores[scores["unit"] == u]
        gt = np.array([truth.unit_marginal[u][c] for c in sub["config"]])
        rows.append({"unit": int(u), "depth": "all", "n": int(len(sub)), "spearman": spearman(sub["score"].values, gt),
                     "top1_is_best": bool(gt[int(np.argmax(sub["score"].values))] == gt.max()),
                     "gt_rank_of_top1": int(1 + np.sum(gt > gt[int(np.argmax(sub["score"].values))]))})
        depths = sorted(sub["depth"].unique())
        if len(depths) > 1:
            for d in depths:
                m = (sub["depth"] == d).values
                rows.append({"unit": int(u), "depth": int(d), "n": int(m.sum()), "spearman": spearman(sub["score"].values[m], gt[m])})
    return rows


def op_importance_check(trained, truth: NB201Truth) -> dict:
    """The paper's FE-MLP read-out (|scalar| per op) against the op effects (key kept for docs)."""
    from autobuild_core.importance import fe_mlp_readout
    from autobuild_core.metrics import spearman

    imp = fe_mlp_readout(trained, truth.space)
    sub = imp[(imp["feature"] == "op") & (imp["value"] != "-")]
    ops = list(sub["value"])
    eff = [truth.op_effect[o] for o in ops]
    return {"spearman": spearman(sub["score"].values, eff), "fe_order": [o for _, o in sorted(zip(-sub["score"].values, ops))],
            "truth_order": sorted(truth.op_effect, key=lambda o: -truth.op_effect[o]), "fe_scores": dict(zip(ops, sub["score"].astype(float)))}


def op_effect_check(effects: pd.DataFrame, truth: NB201Truth) -> dict:
    """An ``op_effects``/``value_effects`` table's op rows against the ground-truth op effects:
    order, per-op sign, Spearman and whether each interval covers the truth."""
    from autobuild_core.metrics import spearman

    sub = effects[effects["feature"] == "op"].set_index("value")
    ops = sorted(truth.op_effect, key=lambda o: -truth.op_effect[o])
    est = {o: float(sub.loc[o, "effect"]) for o in ops}
    order = sorted(ops, key=lambda o: -est[o])
    signs = {o: bool(np.sign(est[o]) == np.sign(truth.op_effect[o])) for o in ops}
    out = {"effect": est, "order": order, "order_correct": order == ops, "sign_match": signs, "all_signs_match": all(signs.values()),
           "spearman": spearman([est[o] for o in ops], [truth.op_effect[o] for o in ops])}
    if "ci_low" in sub.columns:
        out["ci_low"] = {o: float(sub.loc[o, "ci_low"]) for o in ops}
        out["ci_high"] = {o: float(sub.loc[o, "ci_high"]) for o in ops}
        out["covers_truth"] = {o: bool(out["ci_low"][o] <= truth.op_effect[o] <= out["ci_high"][o]) for o in ops}
        out["sign_established"] = {o: bool(out["ci_low"][o] > 0 or out["ci_high"][o] < 0) for o in ops}
        if "se" in sub.columns:
            out["quantile"] = float(np.nanmedian((sub["ci_high"] - sub["ci_low"]) / 2 / sub["se"].replace(0, np.nan)))
    return out


# ---------------------------------------------------------------------------------------------
# Training + evaluation on NB-201
# ---------------------------------------------------------------------------------------------
def _split(n_total: int, n_train: int, n_test: int, seed: int):
    perm = np.random.default_rng(seed).permutation(n_total)
    return perm[:n_train], perm[n_train : n_train + n_test]


def train_eval(truth: NB201Truth, n_train: int, seed: int, epochs: int, lr: float, n_test: int = 3000, rcfg: dict | None = None,
               rank_weight: float = 1.0, scoring: bool = True, n_context: int = 64) -> dict:
    from autobuild_core.baseline import ridge_spearman
    from autobuild_core.metrics import rank_report
    from autobuild_core.ranker import RankerConfig
    from autobuild_core.scoring import score_units
    from autobuild_core.train import TrainConfig, _graphs, train_ranker

    tr, te = _split(len(truth.archs), n_train, n_test, seed)
    tr_a, te_a = [truth.archs[i] for i in tr], [truth.archs[i] for i in te]
    t0 = time.perf_counter()
    trained = train_ranker(truth.space, tr_a, truth.y[tr], RankerConfig(**(rcfg or {})),
                           TrainConfig(epochs=epochs, lr=lr, seed=seed, val_fraction=0.0, rank_weight=rank_weight))
    train_s = time.perf_counter() - t0
    pred, norms = trained._run(_graphs(truth.space, te_a))
    rep = rank_report(pred, norms, truth.y[te])
    out = {"n_train": n_train, "seed": seed, "train_seconds": train_s, "pred_spearman": rep["pred_spearman"],
           "hop_spearman": rep["hop_spearman"], "ridge_spearman": ridge_spearman(truth.space, tr_a, truth.y[tr], te_a, truth.y[te])}
    if scoring:
        from autobuild_core.importance import op_effects

        out["op_importance"] = op_importance_check(trained, truth)
        out["op_effects"] = op_effect_check(op_effects(trained, truth.space, n_context=2048, seed=seed), truth)
        for method in ("paper", "marginal"):
            t1 = time.perf_counter()
            sc = score_units(trained, truth.space, method=method, n_context=n_context, seed=seed)
            out[f"units_{method}"] = unit_score_checks(sc, truth)
            out[f"scoring_seconds_{method}"] = time.perf_counter() - t1
    return out


def _agg(runs: list[dict]) -> dict:
    """Mean and std over repeats of every number the runs share."""
    out = {"repeats": len(runs)}
    for key in ("pred_spearman", "ridge_spearman", "train_seconds"):
        out[key], out[key + "_std"] = mean_std([r[key] for r in runs])
    hops = np.array([r["hop_spearman"] for r in runs], dtype=float)
    out["hop_spearman"], out["hop_spearman_std"] = np.nanmean(hops, 0).tolist(), np.nanstd(hops, 0).tolist()
    if "op_importance" in runs[0]:
        out["op_importance_spearman"], out["op_importance_spearman_std"] = mean_std([r["op_importance"]["spearman"] for r in runs])
        for method in ("paper", "marginal"):
            rows = [row for r in runs for row in r[f"units_{method}"] if row["depth"] == "all"]
            per_unit = {}
            for row in rows:
                per_unit.setdefault(row["unit"], []).append(row)
            out[f"units_{method}"] = {u: {"spearman": mean_std([x["spearman"] for x in v]), "gt_rank_of_top1": float(np.mean([x["gt_rank_of_top1"] for x in v]))}
                                      for u, v in sorted(per_unit.items())}
    return out


def size_study(truth, sizes, repeats, large_repeats, epochs, lr, seed, n_context, log) -> dict:
    out = {}
    for n in sizes:
        reps = repeats if n < 1000 else large_repeats
        runs = []
        for r in range(reps):
            runs.append(train_eval(truth, n, seed + r, epochs, lr, n_context=n_context))
            x = runs[-1]
            log(f"  size {n:5d} repeat {r}: pred {x['pred_spearman']:.3f}  hop {x['hop_spearman'][-1]:.3f}  ridge {x['ridge_spearman']:.3f}  "
                f"node3 units paper {x['units_paper'][2]['spearman']:.2f} marginal {x['units_marginal'][2]['spearman']:.2f}  ({x['train_seconds']:.1f}s)")
        out[str(n)] = {**_agg(runs), "runs": runs}
    return out


def lr_study(truth, sizes, repeats, epochs, seed, log) -> dict:
    out = {}
    for n in sizes:
        for lr in (1e-4, 1e-3):
            runs = [train_eval(truth, n, seed + r, epochs, lr, scoring=False) for r in range(repeats)]
            out[f"{n}@{lr:g}"] = {"n_train": n, "lr": lr, **_agg(runs)}
            log(f"  size {n:5d} lr {lr:g}: pred {out[f'{n}@{lr:g}']['pred_spearman']:.3f}")
    return out


def ablation_study(truth, n_train, repeats, epochs, lr, seed, log) -> dict:
    out = {}
    for name, over in ABLATIONS.items():
        over = dict(over)
        rw = over.pop("rank_weight", 1.0)
        runs = [train_eval(truth, n_train, seed + r, epochs, lr, rcfg=over, rank_weight=rw, scoring=False) for r in range(repeats)]
        out[name] = {"n_train": n_train, **_agg(runs)}
        a = out[name]
        log(f"  {name:38s}: pred {a['pred_spearman']:.3f} ± {a['pred_spearman_std']:.3f}  hops {', '.join(f'{h:.2f}' for h in a['hop_spearman'])}")
    return out


# ---------------------------------------------------------------------------------------------
# Op-effect read-out vs ground truth (NB-201)
# ---------------------------------------------------------------------------------------------
EFFECT_SIZES = (50, 100, 200, 500)


def effects_study(truth: NB201Truth, sizes=EFFECT_SIZES, repeats: int = 10, n_models: int = 3, epochs: int = 100, lr: float = 1e-3,
                  n_context: int = 16384, seed: int = 0, log=print) -> dict:
    """Per training size and repeat (training cells drawn with seed + r): the op-effect read-out
    of a bootstrap ensemble (``op_effects``), the paper's FE-MLP read-out of its first member and
    the plain training-data marginals (``value_effects`` on the training cells), each against the
    ground-truth op effects."""
    from autobuild_core.importance import fe_mlp_readout, op_effects, train_ensemble, value_effects
    from autobuild_core.train import TrainConfig

    out: dict = {"truth": truth.op_effect, "settings": {"sizes": list(sizes), "repeats": repeats, "n_models": n_models, "epochs": epochs,
                                                        "lr": lr, "n_context": n_context, "seed": seed}, "sizes": {}}
    for n in sizes:
        runs = []
        for r in range(repeats):
            s = seed + r
            tr, _ = _split(len(truth.archs), n, 0, s)
            archs, y = [truth.archs[i] for i in tr], truth.y[tr]
            t0 = time.perf_counter()
            ens = train_ensemble(truth.space, archs, y, n_models=n_models, train=TrainConfig(lr=lr, epochs=epochs, val_fraction=0.0), seed=s)
            eff = op_effects(ens, truth.space, n_context=n_context, seed=s)
            run = {"seed": s, "seconds": time.perf_counter() - t0, "readout": op_effect_check(eff, truth),
                   "data": op_effect_check(value_effects(truth.space, archs, y), truth), "fe_mlp": op_importance_check(ens[0], truth)}
            runs.append(run)
            x = run["readout"]
            log(f"  effects n={n:4d} seed {s}: order {'ok ' if x['order_correct'] else 'BAD'} signs {'ok ' if x['all_signs_match'] else 'BAD'} "
                f"rho {x['spearman']:.2f}  " + " ".join(f"{o[:6]} {x['effect'][o]:+.2f}" for o in x["order"])
                + f"  | data rho {run['data']['spearman']:.2f}, FE-MLP rho {run['fe_mlp']['spearman']:.2f}  ({run['seconds']:.0f}s)")
        ops = list(truth.op_effect)
        agg = {"repeats": len(runs)}
        for key in ("readout", "data"):
            agg[key] = {"order_correct": float(np.mean([r[key]["order_correct"] for r in runs])),
                        "all_signs_match": float(np.mean([r[key]["all_signs_match"] for r in runs])),
                        "sign_match": {o: float(np.mean([r[key]["sign_match"][o] for r in runs])) for o in ops},
                        "spearman": mean_std([r[key]["spearman"] for r in runs]),
                        "effect": {o: mean_std([r[key]["effect"][o] for r in runs]) for o in ops}}
        agg["readout"]["coverage"] = {o: float(np.mean([r["readout"]["covers_truth"][o] for r in runs])) for o in ops}
        agg["readout"]["sign_established"] = {o: float(np.mean([r["readout"]["sign_established"][o] for r in runs])) for o in ops}
        # a sign the read-out states (interval excludes 0) that is wrong: the failure a reader would act on
        agg["readout"]["confident_wrong"] = {o: float(np.mean([r["readout"]["sign_established"][o] and not r["readout"]["sign_match"][o]
                                                                for r in runs])) for o in ops}
        agg["readout"]["ci_halfwidth"] = {o: float(np.mean([(r["readout"]["ci_high"][o] - r["readout"]["ci_low"][o]) / 2 for r in runs])) for o in ops}
        agg["fe_mlp"] = {"spearman": mean_std([r["fe_mlp"]["spearman"] for r in runs]),
                         "score": {o: mean_std([r["fe_mlp"]["fe_scores"][o] for r in runs]) for o in ops}}
        agg["data_sign_limit"] = truth.sign_limit(n, seed=seed)
        out["sizes"][str(n)] = {**agg, "runs": runs}
        a = agg["readout"]
        log(f"  effects n={n}: order correct {a['order_correct']:.0%}, all signs {a['all_signs_match']:.0%}, rho {a['spearman'][0]:.2f}; "
            f"data rho {agg['data']['spearman'][0]:.2f}; FE-MLP rho {agg['fe_mlp']['spearman'][0]:.2f}")
    return out


def plot_effects(res: dict, path) -> None:
    """Op effects vs ground truth (read-out with its interval, per size) beside the FE-MLP
    read-out and the Spearman of each read-out with the truth; written headless (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    truth = res["truth"]
    ops = sorted(truth, key=lambda o: -truth[o])
    sizes = list(res["sizes"])
    fig = Figure(figsize=(14, 4.2))
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2.2, 1.4, 1.2]})
    x = np.arange(len(ops))
    w = 0.8 / (len(sizes) + 1)
    for i, n in enumerate(sizes):
        a = res["sizes"][n]["readout"]
        m = np.array([a["effect"][o][0] for o in ops])
        hw = np.array([a["ci_halfwidth"][o] for o in ops])
        ax1.errorbar(x + (i - len(sizes) / 2) * w, m, yerr=hw, fmt="o", capsize=3, ms=4,
                     label=f"n={n}: order ok {a['order_correct']:.0%}, signs ok {a['all_signs_match']:.0%}")
    ax1.scatter(x + (len(sizes) / 2) * w, [truth[o] for o in ops], marker="*", s=120, color="k", zorder=5, label="ground truth")
    ax1.axhline(0, color="#777", lw=0.8)
    ax1.set_xticks(x, ops, fontsize=8)
    ax1.set_ylabel("effect on CIFAR-10 accuracy (points)")
    ax1.set_title("op-effect read-out: mean over repeats, whiskers = mean 95% interval", fontsize=9)
    ax1.legend(fontsize=7)
    for i, n in enumerate(sizes):
        f = res["sizes"][n]["fe_mlp"]["score"]
        ax2.errorbar(x + (i - len(sizes) / 2) * w, [f[o][0] for o in ops], yerr=[f[o][1] for o in ops], fmt="s", capsize=3, ms=4, label=f"n={n}")
    ax2.set_xticks(x, [o.replace("nor_", "").replace("_connect", "") for o in ops], fontsize=8)
    ax2.set_ylabel("|FE-MLP scalar| (mean ± std over repeats)")
    ax2.set_title("FE-MLP scalar (paper read-out; not an effect estimate)", fontsize=9)
    ax2.legend(fontsize=7)
    xs = [int(n) for n in sizes]
    for key, label in (("readout", "op-effect read-out"), ("data", "training-data marginals"), ("fe_mlp", "FE-MLP scalar")):
        ms = [res["sizes"][n][key]["spearman"] for n in sizes]
        ax3.errorbar(xs, [m[0] for m in ms], yerr=[m[1] for m in ms], marker="o", capsize=3, label=label)
    ax3.set_xscale("log"), ax3.set_xlabel("training cells"), ax3.set_ylabel("Spearman with ground-truth op effects")
    ax3.axhline(0, color="#777", lw=0.8), ax3.set_ylim(-1.05, 1.05), ax3.legend(fontsize=7)
    ax3.set_title("agreement with ground truth (mean ± std)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def md_effects(res: dict, png_name: str = "studies_effects.png") -> str:
    """The Markdown section for docs/results.md (``benchmarks/all.py`` can append it as is)."""
    st = res["settings"]
    truth = res["truth"]
    ops = sorted(truth, key=lambda o: -truth[o])
    lines = ["## Op effects: read-out vs NAS-Bench-201 ground truth", "",
             f"Command: `autobuild bench studies --parts effects --effect-sizes {','.join(str(s) for s in st['sizes'])} --repeats {st['repeats']} "
             f"--effect-models {st['n_models']} --epochs {st['epochs']} --seed {st['seed']} --json docs/results/studies_effects.json` "
             "(the PNG is written next to the JSON).", "",
             f"Per repeat r (seed {st['seed']}+r): that many random training cells, an ensemble of {st['n_models']} rankers on bootstrap "
             f"resamples ({st['epochs']} epochs, lr {st['lr']:g}), `op_effects` over all 15,625 cells. Ground truth (same definition on the "
             "measured accuracies): " + ", ".join(f"{o} {truth[o]:+.2f}" for o in ops) + ".", "",
             "| n train | order correct | all 5 signs match | sign match per op (" + ", ".join(ops) + ") | Spearman | 95% interval covers truth (per op) | "
             "training-data marginals: order / signs / Spearman | FE-MLP Spearman |", "|---|---|---|---|---|---|---|---|"]
    for n, a in res["sizes"].items():
        r, d, f = a["readout"], a["data"], a["fe_mlp"]
        lines.append(f"| {n} | {r['order_correct']:.0%} | {r['all_signs_match']:.0%} | " + " / ".join(f"{r['sign_match'][o]:.0%}" for o in ops)
                     + f" | {r['spearman'][0]:.2f} ± {r['spearman'][1]:.2f} | " + " / ".join(f"{r['coverage'][o]:.0%}" for o in ops)
                     + f" | {d['order_correct']:.0%} / {d['all_signs_match']:.0%} / {d['spearman'][0]:.2f} | {f['spearman'][0]:.2f} ± {f['spearman'][1]:.2f} |")
    if all(run["readout"].get("sign_established") for a in res["sizes"].values() for run in a["runs"]):
        lines += ["", "Signs the read-out states (its 95% interval, Student-t over the ensemble members, excludes zero; otherwise it reports the sign as *uncertain*): share of "
                  "repeats with a stated sign, and share with a stated sign that is wrong, per op (" + ", ".join(ops) + "):", "",
                  "| n train | sign stated | stated and wrong |", "|---|---|---|"]
        from scipy.stats import t as student_t

        # the library's interval: Student-t quantile with n_models - 1 df (runs stored with another
        # quantile are rescaled: their interval half-width / their quantile is the standard error)
        q = float(student_t.ppf(0.975, df=st["n_models"] - 1)) if st["n_models"] > 1 else 1.96
        for n, a in res["sizes"].items():
            runs = [run["readout"] for run in a["runs"]]
            def states(x, o):
                half = (x["ci_high"][o] - x["ci_low"][o]) / 2 / x.get("quantile", 1.96) * q
                return abs(x["effect"][o]) > half
            stated = {o: np.mean([states(x, o) for x in runs]) for o in ops}
            wrong = {o: np.mean([states(x, o) and not x["sign_match"][o] for x in runs]) for o in ops}
            lines.append(f"| {n} | " + " / ".join(f"{stated[o]:.0%}" for o in ops) + " | " + " / ".join(f"{wrong[o]:.0%}" for o in ops) + " |")
    if all("data_sign_limit" in a for a in res["sizes"].values()):
        lines += ["", "What the data allow: the share of 2,000 random samples of n cells whose *measured* op effect (the ground-truth "
                  "definition applied to the sample alone) has the true sign, per op (" + ", ".join(ops) + "). An effect this close to zero "
                  "cannot be signed reliably from n random cells by any read-out without prior knowledge:", "",
                  "| n train | sign right from the sample alone | read-out sign right |", "|---|---|---|"]
        for n, a in res["sizes"].items():
            lines.append(f"| {n} | " + " / ".join(f"{a['data_sign_limit'][o]:.0%}" for o in ops) + " | "
                         + " / ".join(f"{a['readout']['sign_match'][o]:.0%}" for o in ops) + " |")
    lines += ["", "Mean read-out per op (± std over repeats):", "", "| n train | " + " | ".join(ops) + " |", "|---|" + "---|" * len(ops)]
    for n, a in res["sizes"].items():
        lines.append(f"| {n} | " + " | ".join(f"{a['readout']['effect'][o][0]:+.2f} ± {a['readout']['effect'][o][1]:.2f}" for o in ops) + " |")
    return "\n".join(lines + ["", f"![op effects]({png_name})", ""])


# ---------------------------------------------------------------------------------------------
# OFA-MobileNetV3 on ImageNet
# ---------------------------------------------------------------------------------------------
def _value_scores(scores, space, u: int) -> dict:
    """Per layer value (e, k) of unit u: configuration scores averaged with weight = share of the
    configuration's layers holding that value (what "k=7 in unit 3" is worth on average)."""
    from autobuild_core.scoring import config_of

    sub = scores[scores["unit"] == u]
    cfgs = [config_of(c) for c in sub["config"]]
    s = sub["score"].values
    out = {}
    for name, pos in (("e", 0), ("k", 1)):
        vals = sorted({layer[pos] for c in cfgs for layer in c})
        share = np.array([[sum(layer[pos] == v for layer in c) / len(c) for v in vals] for c in cfgs])
        out[name] = {int(v): float((share[:, i] * s).sum() / share[:, i].sum()) for i, v in enumerate(vals)}
    return out


def _data_value_means(space, archs, y, u: int) -> dict:
    """The same per-value average on the data (biased: the subnets come from evolutionary search)."""
    out = {}
    for name, pos in (("e", 0), ("k", 1)):
        acc: dict = {}
        for a, v in zip(archs, y):
            cfg = a.units[u]
            for layer in cfg:
                w = acc.setdefault(int(layer[pos]), [0.0, 0.0])
                w[0] += v / len(cfg)
                w[1] += 1 / len(cfg)
        out[name] = {k: s / n for k, (s, n) in sorted(acc.items())}
    return out


def ofa_study(table: str, repeats, epochs, lr, seed, n_context, log) -> dict:
    from autobuild_core.build import build_arch, prune_space
    from autobuild_core.importance import feature_importance
    from autobuild_core.metrics import spearman
    from autobuild_core.ranker import RankerConfig
    from autobuild_core.scoring import score_units
    from autobuild_core.train import TrainConfig, train_ranker

    from .ranker import bench_ranker

    space, archs, metrics = labelled_table("ofa_mbv3", table)
    y = np.array([m["top1"] for m in metrics], dtype=float)
    n_train = int(round(0.9 * len(archs)))
    quiet = lambda s: None  # noqa: E731
    split = bench_ranker("ofa_mbv3", table, target="top1", train_size=n_train, test_size=len(archs) - n_train, repeats=repeats,
                         epochs=epochs, lr=lr, seed=seed, log=quiet)
    split.pop("per_repeat", None)
    log(f"  OFA 90/10: pred {split['pred_spearman']:.3f} ± {split['pred_spearman_std']:.3f}, hops {', '.join(f'{h:.2f}' for h in split['hop_spearman'])}, "
        f"ridge {split['baseline_ridge_spearman']:.3f}")
    trained = train_ranker(space, archs, y, RankerConfig(), TrainConfig(epochs=epochs, lr=lr, seed=seed, val_fraction=0.0))
    imp = feature_importance(trained, space, archs)
    # plain Python values: build_arch hands the best resolution to the space's validator
    imp["value"] = pd.Series([v.item() if isinstance(v, np.generic) else v for v in imp["value"]], index=imp.index, dtype=object)
    out = {"n_archs": len(archs), "split": split, "fe_mlp": imp[imp["feature"].isin(["e", "k", "r"])].to_dict("records"), "methods": {}}
    for method in ("paper", "marginal"):
        t0 = time.perf_counter()
        sc = score_units(trained, space, method=method, n_context=n_context, seed=seed)
        secs = time.perf_counter() - t0
        res = {"scoring_seconds": secs, "per_unit": [], "authors_check": []}
        for u in range(len(space.units)):
            best = sc[(sc["unit"] == u) & (sc["rank"] == 1)].iloc[0]
            vs = _value_scores(sc, space, u)
            res["per_unit"].append({"unit": u, "top1_config": best["label"], "values": vs,
                                    "best_e": max(vs["e"], key=vs["e"].get), "best_k": max(vs["k"], key=vs["k"].get)})
            lookup = dict(zip(sc[sc["unit"] == u]["config"], sc[sc["unit"] == u]["score"]))
            for d in space.units[u].depths:
                idx = [i for i, a in enumerate(archs) if len(a.units[u]) == d]
                s = [lookup[json.dumps([list(layer) for layer in archs[i].units[u]])] for i in idx]
                res["authors_check"].append({"unit": u, "depth": d, "n": len(idx), "spearman": spearman(s, y[idx]) if len(idx) > 2 else float("nan")})
        # where the top-1 build lands inside its own top-5 pruned space (best resolution only)
        pruned = prune_space(space, sc, k=5, importance=imp, keep_globals="best")
        cands = list(pruned.enumerate_by_score())
        pred = trained.predict(cands)
        built = build_arch(space, sc, imp)
        pb = float(trained.predict([built])[0])
        res["build"] = {"arch": space.format(built), "predicted_top1": pb, "pruned_size": len(cands),
                        "rank_in_pruned": int(1 + np.sum(pred > pb + 1e-9)), "pruned_pred_max": float(pred.max())}
        out["methods"][method] = res
        log(f"  OFA {method}: scored in {secs:.1f}s; best e/k per unit "
            f"{[(p['best_e'], p['best_k']) for p in res['per_unit']]}; build rank {res['build']['rank_in_pruned']}/{len(cands)}")
    out["data_value_means"] = [_data_value_means(space, archs, y, u) for u in range(len(space.units))]
    return out


# ---------------------------------------------------------------------------------------------
# Pruned-space quality (search tuning diagnostic)
# ---------------------------------------------------------------------------------------------
def pruned_study(table: str, budgets=(50, 100, 200), seeds=range(1000, 1006), seeds_fraction: float = 0.5, prune_factor: float = 4.0,
                 log=print) -> dict:
    """Best table accuracy inside AutoBuild's pruned space, before any search, exactly as
    ``bench search`` builds it (same seed set, ranker, k rule), for both unit scorings: the
    ceiling the pruned-space search works under. Meant for tuning seeds (default 1000-1005)."""
    from autobuild_core.build import prune_space

    from . import search as S

    bench = S.load_bench("nb201", table, None, None)
    objective = S.make_objective(bench, None, None)
    space = bench.space
    out: dict = {"budgets": list(budgets), "seeds": list(seeds), "seeds_fraction": seeds_fraction, "prune_factor": prune_factor, "best": {}}
    for b in budgets:
        for seed in seeds:
            n_seed = min(b, max(10, int(round(seeds_fraction * b))))
            seed_set = S._seed_set(space, objective, n_seed, seed)
            ok = [(a, v) for a, v in seed_set if v is not None]
            for scoring in ("paper", "marginal"):
                st = S.AutoBuildSettings(seeds_fraction=seeds_fraction, prune_factor=prune_factor, unit_scoring=scoring)
                _, scores, imp = S._train_and_score(space, [a for a, _ in ok], [v[0] for _, v in ok], st, seed)
                ks = S.log_scaled_k(space.n_unit_configs(), prune_factor * max(1, b - len(seed_set)))
                vals = [v[0] for v in objective(list(prune_space(space, scores, k=ks, importance=imp).enumerate_by_score())) if v is not None]
                out["best"].setdefault(scoring, {}).setdefault(str(b), []).append(max(vals))
        log(f"  pruned-space best at budget {b}: " + ", ".join(f"{sc} {np.mean(v[str(b)]):.3f}" for sc, v in out["best"].items()))
    out["mean"] = {sc: {b: float(np.mean(v)) for b, v in cells.items()} for sc, cells in out["best"].items()}
    return out


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def bench_studies(nb201_table: str | None, ofa_table: str | None, parts=("size", "lr", "ablation", "ofa"), sizes=DEFAULT_SIZES,
                  repeats: int = 3, large_repeats: int = 2, epochs: int = 100, lr: float = 1e-3, ofa_epochs: int = 100,
                  ablation_size: int = 500, lr_sizes=(100, 1000), n_context: int = 64, seed: int = 0, log=print,
                  effect_sizes=EFFECT_SIZES, effect_models: int = 3) -> dict:
    t0 = time.perf_counter()
    out: dict = {"settings": {"parts": list(parts), "sizes": list(sizes), "repeats": repeats, "large_repeats": large_repeats, "epochs": epochs,
                              "lr": lr, "ofa_epochs": ofa_epochs, "ablation_size": ablation_size, "lr_sizes": list(lr_sizes),
                              "n_context": n_context, "seed": seed}, "skipped": {}}
    nb_parts = [p for p in parts if p in ("size", "lr", "ablation", "effects")]
    if nb_parts:
        if not nb201_table or not Path(nb201_table).is_file():
            for p in nb_parts:
                out["skipped"][p] = f"NAS-Bench-201 table not found: {nb201_table}"
        else:
            truth = NB201Truth(nb201_table)
            out["nb201_op_effect"] = truth.op_effect
            if "size" in parts:
                log("studies: training-set size (NB-201)")
                out["size"] = size_study(truth, sizes, repeats, large_repeats, epochs, lr, seed, n_context, log)
            if "lr" in parts:
                log("studies: learning rate (NB-201)")
                out["lr"] = lr_study(truth, lr_sizes, repeats, epochs, seed, log)
            if "effects" in parts:
                log("studies: op-effect read-out vs ground truth (NB-201)")
                out["effects"] = effects_study(truth, effect_sizes, repeats, effect_models, epochs, lr, seed=seed, log=log)
            if "ablation" in parts:
                log("studies: ablations (NB-201)")
                out["ablation"] = ablation_study(truth, ablation_size, repeats, epochs, lr, seed, log)
    if "pruned" in parts:
        if not nb201_table or not Path(nb201_table).is_file():
            out["skipped"]["pruned"] = f"NAS-Bench-201 table not found: {nb201_table}"
        else:
            log("studies: pruned-space quality (NB-201, tuning seeds from --seed)")
            out["pruned"] = pruned_study(nb201_table, seeds=range(seed, seed + repeats), log=log)
    if "ofa" in parts:
        if not ofa_table or not Path(ofa_table).is_file():
            out["skipped"]["ofa"] = f"OFA-MobileNetV3 table not found: {ofa_table}"
        else:
            log("studies: OFA-MobileNetV3 ImageNet")
            out["ofa"] = ofa_study(ofa_table, repeats, ofa_epochs, lr, seed, None, log)
    out["seconds"] = time.perf_counter() - t0
    return out


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {text!r}") from None


def run(args) -> int:
    import torch

    torch.set_num_threads(1)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = set(parts) - {"size", "lr", "ablation", "ofa", "pruned", "effects"}
    if bad:
        raise ConfigError(f"unknown --parts {sorted(bad)}; choose from size, lr, ablation, ofa, pruned, effects.")
    res = bench_studies(args.table, args.ofa_table, parts, _ints(args.sizes), args.repeats, args.large_repeats, args.epochs, args.lr,
                        args.ofa_epochs, args.ablation_size, _ints(args.lr_sizes), args.n_context, args.seed,
                        effect_sizes=_ints(args.effect_sizes), effect_models=args.effect_models)
    for p, why in res["skipped"].items():
        print(f"skipped {p}: {why}")
    print(f"studies done in {res['seconds']:.0f}s")
    write_json(args.json, res)
    if args.json and "effects" in res:
        png = Path(args.json).with_suffix(".png")
        plot_effects(res["effects"], png)
        print(f"wrote {png}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("studies", help="ranker vs data size, ablations, interpretability checks against ground truth",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--table", required=True, help="NAS-Bench-201 CIFAR-10 CSV")
    p.add_argument("--ofa-table", help="OFA-MobileNetV3 ImageNet JSONL (needed by the ofa part)")
    p.add_argument("--parts", default="size,lr,ablation,ofa")
    p.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--large-repeats", type=int, default=2, help="repeats for training sets of 1,000 or more")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (the lr part measures 1e-4 vs 1e-3)")
    p.add_argument("--ofa-epochs", type=int, default=100)
    p.add_argument("--ablation-size", type=int, default=500)
    p.add_argument("--lr-sizes", default="100,1000")
    p.add_argument("--n-context", type=int, default=64, help="contexts for marginal unit scoring on NB-201")
    p.add_argument("--effect-sizes", default=",".join(str(s) for s in EFFECT_SIZES), help="training sizes of the effects part")
    p.add_argument("--effect-models", type=int, default=3, help="bootstrap-trained rankers per read-out in the effects part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here (with --parts effects, also a PNG of the same name)")
    p.set_defaults(func=run)
