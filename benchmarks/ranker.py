"""``autobuild bench ranker``: how well the ranker orders unseen architectures.

Each repeat draws a fresh training set (and test set) with its own seed, trains the ranker and
reports the rank correlation of its prediction and of every hop's embedding norm with the target
on the test architectures, beside a ridge regression on one-hot features fitted on the same
training set: a GNN result means little unless it beats that baseline. Settings not given fall
back to the library's defaults (``TrainConfig``/``RankerConfig``, or a named ``--preset``), so the
benchmark measures what the product trains.
"""

from __future__ import annotations

import time

import numpy as np

from search_spaces.errors import ConfigError

from .common import labelled_table, mean_std, targets, write_json


def bench_ranker(space_name, table, test_table=None, target=None, train_size=500, test_size=5000, repeats=3, epochs=None,
                 rank_weight=None, lr=None, gnn=None, seed=0, dataset=None, log=print, preset="default", val_fraction=None) -> dict:
    """Train ``repeats`` rankers on ``train_size`` architectures and rank ``test_size`` others.

    ``epochs``, ``rank_weight``, ``lr``, ``gnn`` and ``val_fraction``: None keeps the preset's value
    (the library defaults for ``preset="default"``). The ranker holds out ``val_fraction`` of the
    training architectures to pick its checkpoint, as in the product.
    """
    from autobuild_core.baseline import ridge_spearman
    from autobuild_core.ranker import RankerConfig
    from autobuild_core.train import TrainConfig, train_ranker

    overrides = {k: v for k, v in {"epochs": epochs, "rank_weight": rank_weight, "lr": lr, "val_fraction": val_fraction}.items() if v is not None}
    base_tc = TrainConfig.preset(preset, **overrides)
    rc = RankerConfig.preset(preset)
    if gnn:
        rc = rc.model_copy(update={"gnn": gnn})
        rc = RankerConfig(**rc.model_dump())  # validated

    space, archs, metrics = labelled_table(space_name, table, dataset)
    y, target_text = targets(metrics, target)
    if test_table:
        _, t_archs, t_metrics = labelled_table(space_name, test_table, dataset)
        t_y, _ = targets(t_metrics, target_text)
    if test_table:
        if train_size > len(archs):
            raise ConfigError(f"--train-size {train_size} exceeds the {len(archs)} architectures of the training table; lower it.")
    elif train_size >= len(archs):
        raise ConfigError(f"--train-size {train_size} leaves no test architectures in a table of {len(archs)}; lower it or pass --test-table.")
    reps = []
    t0 = time.perf_counter()
    for r in range(repeats):
        rng = np.random.default_rng(seed + r)
        perm = rng.permutation(len(archs))
        tr = perm[:train_size]
        if test_table:
            te_perm = rng.permutation(len(t_archs))[:test_size]
            te_archs, te_y = [t_archs[i] for i in te_perm], t_y[te_perm]
        else:
            te = perm[train_size : train_size + test_size]
            te_archs, te_y = [archs[i] for i in te], y[te]
        tr_archs = [archs[i] for i in tr]
        tc = base_tc.model_copy(update={"seed": seed + r, "progress": True})
        ts = time.perf_counter()
        trained = train_ranker(space, tr_archs, y[tr], rc, tc)
        train_s = time.perf_counter() - ts
        ev = trained.evaluate(te_archs, te_y)
        ev["baseline_ridge_spearman"] = ridge_spearman(space, tr_archs, y[tr], te_archs, te_y)
        ev["train_seconds"] = train_s
        ev["val_spearman"], ev["best_epoch"] = trained.val_spearman, trained.best_epoch
        reps.append(ev)
        val = "n/a" if trained.val_spearman is None else f"{trained.val_spearman:.3f}"
        log(f"  repeat {r}: pred spearman {ev['pred_spearman']:.3f}, final-hop {ev['hop_spearman'][-1]:.3f}, "
            f"ridge {ev['baseline_ridge_spearman']:.3f}; kept epoch {trained.best_epoch} (val {val}) ({train_s:.1f}s)")
    out = {"space": space_name, "table": str(table), "test_table": str(test_table) if test_table else None, "target": target_text,
           "n_train": int(train_size), "n_test": int(len(te_y)), "repeats": repeats, "preset": preset, "epochs": base_tc.epochs,
           "rank_weight": base_tc.rank_weight, "gnn": rc.gnn, "lr": base_tc.lr, "val_fraction": base_tc.val_fraction,
           "train_config": base_tc.to_dict(), "ranker_config": rc.to_dict(), "seconds": time.perf_counter() - t0}
    for key in ("pred_spearman", "pred_kendall", "baseline_ridge_spearman", "train_seconds"):
        out[key], out[key + "_std"] = mean_std([r[key] for r in reps])
    for key in ("hop_spearman", "hop_kendall"):
        arr = np.array([r[key] for r in reps], dtype=float)
        out[key] = np.nanmean(arr, 0).tolist()
        out[key + "_std"] = np.nanstd(arr, 0).tolist()
    out["per_repeat"] = reps
    return out


def summary(res: dict) -> str:
    hops = ", ".join(f"{h:.3f}" for h in res["hop_spearman"])
    return (f"ranker on {res['space']} ({res['n_train']} train / {res['n_test']} test, {res['repeats']} repeats, target {res['target']}):\n"
            f"  prediction Spearman {res['pred_spearman']:.3f} ± {res['pred_spearman_std']:.3f}, Kendall {res['pred_kendall']:.3f}\n"
            f"  hop Spearman (hop 0..{len(res['hop_spearman']) - 1}): {hops}\n"
            f"  ridge baseline (one-hot) Spearman {res['baseline_ridge_spearman']:.3f}\n"
            f"  {res['train_seconds']:.1f}s per training, {res['seconds']:.1f}s in all")


def run(args) -> int:
    res = bench_ranker(args.space, args.table, args.test_table, args.target, args.train_size, args.test_size, args.repeats,
                       args.epochs, args.rank_weight, args.lr, args.gnn, args.seed, args.dataset, preset=args.preset,
                       val_fraction=args.val_fraction)
    print(summary(res))
    write_json(args.json, res)
    return 0


def register(sub) -> None:
    p = sub.add_parser("ranker", help="ranker prediction and per-hop Spearman vs a ridge baseline")
    p.add_argument("--space", required=True)
    p.add_argument("--table", help="labelled table (CSV/JSONL/Parquet; NASLib's JSON for transnas_micro); optional for nasbench_graph")
    p.add_argument("--dataset", help="nasbench_graph dataset (default cora)")
    p.add_argument("--test-table")
    p.add_argument("--target", help="metric name or expression (default: the table's only accuracy-like column)")
    p.add_argument("--train-size", type=int, default=500)
    p.add_argument("--test-size", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--preset", default="default", choices=["default", "paper"], help="ranker/training settings (autobuild_core.train.PRESETS)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    p.add_argument("--rank-weight", type=float, default=None, help="ranking-loss weight (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    p.add_argument("--val-fraction", type=float, default=None, help="held-out share for checkpoint selection (default: the preset's)")
    p.add_argument("--gnn", default=None, choices=["gatv2", "graphconv", "gin"], help="message-passing layer (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results as JSON here")
    p.set_defaults(func=run)
