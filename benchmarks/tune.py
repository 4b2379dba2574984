"""``autobuild bench tune``: compare AutoBuild settings on tuning seeds across several tables.

Defaults are chosen here, on seeds 1000 and up and on more tables than the reported ones, so the
reported comparison (seeds 0-9, ``bench search`` / ``bench all``) never sees the data the settings
were chosen on. Each variant is a list of ``--set`` overrides of the driver's settings; reference
baselines (``tpe``, ``predictor``, ...) run beside them. Results merge into one JSON, so a sweep can
be resumed or extended table by table; ``bench all`` renders it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from search_spaces.errors import ConfigError

# name -> overrides of AutoBuildSettings (the run config's KEY=VALUE syntax)
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "u400c25": ["search.options.pool_units=400", "search.options.pool_random=200", "search.options.clip_quantile=0.25"],
    "u200c25": ["search.options.clip_quantile=0.25"],
    "stall2": ["search.options.stall_rounds=2"],
    "marginal": ["search.options.unit_scoring=marginal"],
    "keep75": ["search.options.keep_exponent=0.75"],
    "credit": ["search.options.units_credit=true"],
    "parents20": ["search.options.pool_parents=20", "search.options.pool_mutations=800"],
    "explore30": ["search.options.explore_fraction=0.3"],
    "ridge2": ["search.options.ridge_members=2"],
    "units100": ["search.options.units_until=100"],
    "trust50": ["search.options.units_min_spearman=0.5"],
}
REFERENCES = ("tpe", "rea", "predictor", "random")


def _table(name: str, data: str | None):
    from . import search as S

    if name.startswith("nb201"):
        if not data:
            raise ConfigError("table nb201 needs --data DIR holding nb201/nb201_cifar10.csv (or set AUTOBUILD_DATA_DIR).")
        return S.load_bench("nb201", str(Path(data) / "nb201" / "nb201_cifar10.csv"), None, None), [25, 50, 100, 200]
    return S.load_bench("nasbench_graph", None, None, name), [50, 100, 200]


def _method(overrides: list[str]) -> tuple[str, list[str]]:
    """A variant's search method and settings: ``method=NAME`` among its overrides picks the method
    (default autobuild), so a setting can be tried on the predictor loop too (both share the loop)."""
    methods = [o.split("=", 1)[1] for o in overrides if o.startswith("method=")]
    if len(methods) > 1 or (methods and methods[0] not in ("autobuild", *REFERENCES)):
        raise ConfigError(f"a variant takes at most one method=NAME, NAME one of autobuild, {', '.join(REFERENCES)}; got {methods}")
    return (methods[0] if methods else "autobuild"), [o for o in overrides if not o.startswith("method=")]


def tune(tables: list[str], variants: list[str], repeats: int, seed: int, out: str | Path, data: str | None = None,
         extra: dict[str, list[str]] | None = None, log=lambda s: print(s, flush=True), budgets: list[int] | None = None) -> dict:
    """Run every (table, variant) pair not yet in ``out`` and merge the results into it.

    Args:
        tables: ``nb201`` or NAS-Bench-Graph dataset names (``cora``, ``pubmed``, ``photo``, ...).
        variants: names from :data:`VARIANTS`, names of ``extra``, or reference methods (``tpe``, ...).
            A variant's overrides may include ``method=NAME`` (e.g. ``predictor``) to run that method
            with the variant's settings instead of AutoBuild.
        repeats: seeds ``seed .. seed + repeats - 1`` (keep ``seed`` >= 1000: those are the tuning seeds).
        seed: first seed.
        out: JSON file to merge into.
        data: folder of the benchmark tables (for nb201).
        extra: more named variants (name -> overrides).
        log: gets a line per finished repeat and per finished (table, variant) cell (default: print, flushed).
        budgets: evaluation budgets for every table (default: 25/50/100/200 on nb201, 50/100/200 on
            NAS-Bench-Graph). A table already in ``out`` must have been run with the same budgets.
    """
    from . import search as S

    known = {**VARIANTS, **(extra or {})}
    bad = [v for v in variants if v not in known and v not in REFERENCES]
    if bad:
        raise ConfigError(f"unknown variant(s) {bad}; known: {', '.join([*known, *REFERENCES])} (or add one with --variant NAME=KEY=VALUE,...)")
    out = Path(out)
    res = json.loads(out.read_text()) if out.is_file() else {"seed": seed, "repeats": repeats, "tables": {}, "variants": {}}
    if (res["seed"], res["repeats"]) != (seed, repeats):
        raise ConfigError(f"{out} holds seeds {res['seed']}+{res['repeats']}; use the same --seed/--repeats or another --out.")
    for t in tables:
        bench, table_budgets = _table(t, data)
        bud = sorted(budgets) if budgets else table_budgets
        held = {tuple(c["budgets"]) for c in res["tables"].get(t, {}).values()}
        if held and held != {tuple(bud)}:
            raise ConfigError(f"{out} holds table {t} at budgets {sorted(held)[0]}, not {bud}; use the same --budgets or another --out.")
        objective = S.make_objective(bench, None, None)
        for v in variants:
            cell = res["tables"].setdefault(t, {})
            if v in cell:
                continue
            method, over = (v, []) if v in REFERENCES else _method(known[v])
            t0 = time.time()
            r = S.run_single(bench.space, objective, [method], bud, repeats, seed, S.bench_settings("default", over), lambda s: None,
                             progress=lambda line, t=t: log(f"{t:>10s} {line.strip()}"))
            cell[v] = {"optimum": r["optimum"], "budgets": bud, "cells": r["methods"][method], "seconds": round(time.time() - t0, 1)}
            if v not in REFERENCES:
                res["variants"][v] = known[v]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=1))
            log(f"{t:>10s} {v:>12s}: " + " / ".join(f"{cell[v]['cells'][str(b)]['best_mean']:.2f}" for b in bud) + f"  ({cell[v]['seconds']:.0f}s)")
    return res


def markdown(res: dict) -> str:
    """The tuning table: mean best per table and budget, and each variant's mean regret over all cells."""
    tables = list(res["tables"])
    names = []
    for t in tables:
        names += [v for v in res["tables"][t] if v not in names]
    cols = [(t, str(b)) for t in tables for b in next(iter(res["tables"][t].values()))["budgets"]]
    head = "| variant | " + " | ".join(f"{t} B={b}" for t, b in cols) + " | mean regret |"
    lines = [head, "|---|" + "---|" * (len(cols) + 1)]
    for v in names:
        row, regrets = [], []
        for t, b in cols:
            c = res["tables"][t].get(v)
            if c is None:
                row.append("")
                continue
            m = c["cells"][b]["best_mean"]
            row.append(f"{m:.2f}")
            regrets.append(c["optimum"] - m)
        mean = f"{np.mean(regrets):.3f}" if len(regrets) == len(cols) else "(incomplete)"
        lines.append(f"| {v} | " + " | ".join(row) + f" | {mean} |")
    over = "; ".join(f"`{v}`: " + (", ".join(f"`{o}`" for o in res["variants"][v]) or "the defaults") for v in res["variants"])
    return "\n".join(lines + ["", f"Variants: {over or 'none (reference methods only)'}. Seeds {res['seed']}–{res['seed'] + res['repeats'] - 1}."])


def run(args) -> int:
    import torch

    torch.set_num_threads(1)
    extra = {}
    for item in args.variant:
        name, _, sets = item.partition("=")
        if not sets:
            raise ConfigError(f"--variant needs NAME=KEY=VALUE[,KEY=VALUE...], got {item!r}")
        extra[name] = [s for s in sets.split(",") if s]
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] + [v for v in extra if v not in args.variants.split(",")]
    if args.seed < 1000:
        print(f"warning: seed {args.seed} < 1000 overlaps the reported seeds (0-9); tuning should use 1000 and up")
    import os

    from .search import budget_list

    budgets = budget_list(args.budgets) if args.budgets else None
    res = tune(tables, variants, args.repeats, args.seed, args.out, args.data or os.environ.get("AUTOBUILD_DATA_DIR"), extra,
               budgets=budgets)
    print(markdown(res))
    return 0


def register(sub) -> None:
    p = sub.add_parser("tune", help="compare AutoBuild settings on tuning seeds (1000+) over several tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", default="nb201,cora,pubmed,photo", help="nb201 and/or NAS-Bench-Graph datasets (default nb201,cora,pubmed,photo)")
    p.add_argument("--variants", default=",".join([*VARIANTS, "tpe", "predictor"]), help="variant names and reference methods")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]", help="define another variant")
    p.add_argument("--budgets", help="comma-separated evaluation budgets for every table (default 25,50,100,200 on nb201, "
                   "50,100,200 on NAS-Bench-Graph)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--data", help="folder of the benchmark tables (default $AUTOBUILD_DATA_DIR)")
    p.add_argument("--out", default="docs/results/search_tuning.json")
    p.set_defaults(func=run, interrupt_hint="the finished table and variant cells are in --out; a rerun with the same --out runs only the missing ones.")
