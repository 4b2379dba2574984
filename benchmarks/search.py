"""``autobuild bench search``: AutoBuild against search baselines at an equal evaluation budget.

Every method spends exactly the same budget of unique table lookups, and AutoBuild's seed and
built architectures count against it. AutoBuild is the driver that `autobuild run` runs
(:class:`~autobuild_core.driver.AutoBuild`), with the same :class:`AutoBuildSettings` defaults,
``--preset`` and ``--set KEY=VALUE`` overrides; baselines are the registered search strategies
over the full space. Repeat ``r`` uses seed ``--seed + r`` for every method. Tune on other seeds
than the ones reported (docs/results.md uses 0-9; tuning used 1000 and up).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from search_spaces.errors import ConfigError

SINGLE_METHODS = ("autobuild", "autobuild-build", "predictor", "random", "rea", "tpe")
MULTI_METHODS = ("autobuild", "nsga2", "random")
# Methods whose choices never read the budget: a budget-B run is the first B evaluations of a
# longer one (tests/test_search.py checks it), so one run at the largest budget serves every budget.
BUDGET_FREE = ("autobuild", "predictor", "random")


# ---------------------------------------------------------------------------------------------
# The table as an objective
# ---------------------------------------------------------------------------------------------
@dataclass
class Bench:
    """A benchmark table seen through its evaluator: lookups by the evaluator's record key (so
    duplicates are what the evaluation store would treat as duplicates), plus every entry's
    metrics for optima and true fronts."""

    space: object
    evaluator: object
    entries: list  # list[dict] metrics of every table entry
    label: str
    _cache: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # what the results JSON should carry about the oracle
    only: list | None = None  # a table holding part of the space: every method searches its rows alone

    def key(self, arch):
        return self.evaluator.record_key(self.space, arch)

    def metrics(self, archs: Sequence) -> list:
        todo = [a for a in archs if self.key(a) not in self._cache]
        if todo:
            for a, rec in zip(todo, self.evaluator.evaluate(self.space, todo)):
                self._cache[self.key(a)] = dict(rec.metrics) if rec.status == "ok" else None
        return [self._cache[self.key(a)] for a in archs]


def load_bench(space_name: str, table: str | None, latency: str | None, dataset: str | None) -> Bench:
    from search_spaces import get_space

    space = get_space(space_name)
    if space_name == "nb201":
        from evaluators.tables import NB201TableEvaluator

        if not table:
            raise ConfigError("bench search --space nb201 needs --table PATH (the NAS-Bench-201 CIFAR-10 CSV, e.g. $AUTOBUILD_DATA_DIR/nb201/nb201_cifar10.csv).")
        ev, label = NB201TableEvaluator(table, latency_path=latency), str(table)
    elif space_name == "nasbench_graph":
        from evaluators.tables import NASBenchGraphEvaluator

        ev = NASBenchGraphEvaluator(dataset or "cora")
        label = f"nas_bench_graph:{ev.dataset}"
    elif space_name == "transnas_micro":
        from evaluators.transnas import TransNASTableEvaluator

        if not table:
            raise ConfigError("bench search --space transnas_micro needs --table PATH (NASLib's zc_transbench101_micro.json, "
                              "e.g. $AUTOBUILD_DATA_DIR/transnas101_micro/zc_transbench101_micro.json) and --target TASK.")
        ev, label = TransNASTableEvaluator(table, proxies=False), str(table)
    else:
        raise ConfigError(f"bench search supports table spaces 'nb201', 'nasbench_graph' and 'transnas_micro', not {space_name!r} "
                          "(large spaces: --surrogate ofa_mbv3 --data DIR).")
    from evaluators import partial_table_archs

    items = ev.items(space)
    only = partial_table_archs(ev, space, items=items)
    info = {} if only is None else {"searched": f"the {len(only)} architectures the table holds (a part of the space); every method draws from them alone"}
    return Bench(space, ev, [m for _, m in items], label, info=info, only=only)


OFA_TABLE = "ofa_mbv3_imagenet/ofa_mbv3_w10_top1.jsonl"
# name -> (measured table under DATA, surrogate model)
SURROGATES = {"ofa_mbv3": (OFA_TABLE, "ridge"), "ofa_mbv3_gbt": (OFA_TABLE, "gbt")}
SURROGATE_MODELS = {"ridge": "ridge on one-hot OFA features (additive over slots)",
                    "gbt": "gradient-boosted trees on kernel, expansion and depth as numbers (interactions between layers)"}


def load_surrogate_bench(name: str, data: str | None) -> Bench:
    """A surrogate oracle as the objective (:mod:`evaluators.surrogate`): a model fitted on the
    measured table ``DATA/<table>`` predicts every architecture of a space too large to list.
    ``entries`` are the predictions on the table's architectures plus the surrogate's optimum, so
    the reported optimum and regrets are the surrogate's (for ``ofa_mbv3_gbt`` the best of a local
    search, a lower bound on its true optimum: ``optimum_exact`` says which)."""
    import os

    if name not in SURROGATES:
        raise ConfigError(f"unknown surrogate {name!r}; available: {', '.join(SURROGATES)}.")
    table, model = SURROGATES[name]
    folder = data or os.environ.get("AUTOBUILD_DATA_DIR")
    if not folder:
        raise ConfigError(f"--surrogate {name} needs --data DIR (or $AUTOBUILD_DATA_DIR): the folder holding {table}.")
    path = Path(folder) / table
    if not path.is_file():
        raise ConfigError(f"--surrogate {name}: the measured table {path} does not exist; point --data at the folder holding {table}.")
    from evaluators.surrogate import OFASurrogateEvaluator

    ev = OFASurrogateEvaluator(path, model=model)
    opt_arch, opt_val = ev.optimum()
    entries = [{"top1": float(v)} for v in ev.predict(ev.table_archs)] + [{"top1": opt_val}]
    info = {"surrogate": {"name": name, "model": f"{SURROGATE_MODELS[model]} (evaluators/surrogate.py)", "kind": model,
                          "fingerprint": ev.fingerprint(), "alpha": ev.alpha, "cv": ev.cv, "n_train": ev.n_train,
                          "table_best_measured": ev.table_best, "optimum_arch": ev.space.format(opt_arch), "optimum": opt_val,
                          "optimum_exact": model == "ridge", "space_size": ev.space.size()}}
    return Bench(ev.space, ev, entries, f"surrogate:{name} ({table})", info=info)


@dataclass
class Objective:
    """Table metrics -> objective tuples (``None`` for architectures the table lacks)."""

    bench: Bench
    fns: list  # list[Callable[[dict], float]]
    names: list
    directions: tuple

    def __call__(self, archs: Sequence) -> list:
        out = []
        for m in self.bench.metrics(archs):
            if m is None:
                out.append(None)
                continue
            vals = tuple(float(f(m)) for f in self.fns)
            out.append(None if any(not math.isfinite(v) for v in vals) else vals)
        return out

    def table_values(self) -> np.ndarray:
        return np.array([[f(m) for f in self.fns] for m in self.bench.entries], dtype=float)


def make_objective(bench: Bench, target: str | None, objectives: str | None) -> Objective:
    from autobuild_core.target import compile_target, default_target

    metric_names = set(bench.entries[0]) if bench.entries else set()
    # the benchmarks' own accuracy names first (NAS-Bench-Graph also has valid_acc); otherwise the
    # table's one accuracy-like column (cifar100_test_acc, ...), or an error asking for --target
    target = target or next((m for m in ("acc", "cifar10_test_acc", "test_acc", "top1") if m in metric_names), None) \
        or default_target(sorted(metric_names))
    t = compile_target(target)
    t.check_names(metric_names)
    if not objectives:
        return Objective(bench, [t], [target], ("maximize",))
    fns, names, dirs = [], [], []
    for item in [s.strip() for s in objectives.split(",") if s.strip()]:
        if item in ("acc", "target"):
            fns.append(t), names.append(target), dirs.append("maximize")
        elif item.startswith("latency:"):
            dev = item.split(":", 1)[1]
            col = next((c for c in (f"latency_{dev}", dev) if c in metric_names), None)
            if col is None:
                lat = sorted(c for c in metric_names if c.startswith("latency"))
                raise ConfigError(f"No latency column for device {dev!r}; available: {lat or 'none (pass --latency PATH)'}.")
            fns.append(compile_target(col)), names.append(col), dirs.append("minimize")
        else:
            f = compile_target(item)
            f.check_names(metric_names)
            fns.append(f), names.append(item), dirs.append("minimize" if "lat" in item or "param" in item or "flop" in item else "maximize")
    if len(fns) != 2:
        raise ConfigError(f"--objectives needs exactly two objectives (e.g. acc,latency:pixel3), got {len(fns)}.")
    return Objective(bench, fns, names, tuple(dirs))


# ---------------------------------------------------------------------------------------------
# AutoBuild, through the driver
# ---------------------------------------------------------------------------------------------
def bench_settings(preset: str = "default", overrides: Sequence[str] = ()):
    """:class:`AutoBuildSettings` from a preset and ``KEY=VALUE`` overrides (the run config's syntax)."""
    from pydantic import ValidationError

    from autobuild_core.driver import AutoBuildSettings, preset_overrides
    from tasks.config import apply_overrides, deep_merge, format_validation_error

    data = apply_overrides(deep_merge(preset_overrides(preset), {}), list(overrides))
    try:
        return AutoBuildSettings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "--set")) from None


def run_autobuild(space, objective: Objective, budget: int, seed: int, settings, build_only: bool = False):
    """One AutoBuild run of ``budget`` evaluations; returns the driver's result."""
    from autobuild_core.driver import AutoBuild

    s = settings.model_copy(deep=True)
    s.search.budget = budget
    s.seeds.n = min(s.seeds.n, max(2, budget - (s.build.n if s.build.enabled else 0)))
    if build_only:
        s.search.enabled = False
    return AutoBuild(space, objective, s, objective.directions, seed, key=objective.bench.key, only=objective.bench.only).run()


def run_method(method: str, space, objective: Objective, budget: int, seed: int, settings) -> list:
    """The evaluation history (``arch``, ``values``) of one method's run."""
    from autobuild_core.search import as_domain, run_search

    if method in ("autobuild", "autobuild-build"):
        return run_autobuild(space, objective, budget, seed, settings, build_only=method == "autobuild-build").history
    options = {"settings": dict(settings.search.options)} if method == "predictor" else {}
    res = run_search(method, as_domain(space, key=objective.bench.key, only=objective.bench.only), objective, budget, seed,
                     directions=objective.directions, **options)
    return res.history


def best_of(history: list, directions) -> float | None:
    sign = 1.0 if directions[0] == "maximize" else -1.0
    vals = [sign * r["values"][0] for r in history if r["values"] is not None]
    return sign * max(vals) if vals else None


# ---------------------------------------------------------------------------------------------
# Readings: AutoBuild against the best baseline, paired by seed
# ---------------------------------------------------------------------------------------------
BASELINES = ("predictor", "random", "rea", "tpe", "nsga2")


def signed(d: float) -> str:
    """A difference to two decimals, or three where two would print a nonzero difference as 0.00."""
    return f"{d:+.3f}" if d and round(d, 2) == 0 else f"{d:+.2f}"


def paired_diff(ours: list, theirs: list) -> tuple[float, float] | None:
    """Mean and standard error of the per-seed differences (every method runs the same seeds)."""
    if not ours or len(ours) != len(theirs) or len(ours) < 2:
        return None
    d = np.asarray(ours, dtype=float) - np.asarray(theirs, dtype=float)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def best_other(meth: dict, b: str, metric: str = "best", method: str = "autobuild") -> tuple | None:
    """The best baseline at budget ``b`` and how ``method`` compares with it, paired by seed:
    ``(name, its mean, (mean difference, SE) or None)``, or None without a baseline or without
    ``method`` at that budget. ``metric``: ``"best"`` (single objective) or ``"hv_ratio"`` (two objectives)."""
    rivals = {m: c[b][f"{metric}_mean"] for m, c in meth.items() if m in BASELINES and b in c}
    if not rivals or b not in meth.get(method, {}):
        return None
    name = max(rivals, key=rivals.get)
    return name, rivals[name], paired_diff(meth[method][b].get(metric, []), meth[name][b].get(metric, []))


def _noise(pair: tuple | None, fmt: str) -> str:
    """`` ± SE paired`` and, when the difference is under two standard errors, that it is."""
    if pair is None:
        return ""
    d, se = pair
    return f" ± {se:{fmt}} paired SE" + (", within 2 SE" if abs(d) < 2 * se else "")


def verdict_single(res: dict, method: str = "autobuild", tie: float = 0.01) -> str:
    """Computed reading of a search table: AutoBuild against the best baseline at each budget
    (means within ``tie`` of the table's optimum count as ties), with the standard error of the
    per-seed difference, and what unit scores add."""
    opt, meth = res["optimum"], res["methods"]
    if method not in meth:
        return ""
    out = []
    for b in [str(x) for x in res["budgets"]]:
        ours = meth[method][b]["best_mean"]
        other = best_other(meth, b, "best", method)
        if other is None:
            continue
        best_m, theirs, pair = other
        d = ours - theirs
        if opt - ours <= tie and opt - theirs <= tie:  # both at the optimum: a difference there is rounding
            word = f"tie at the optimum (both within {tie})"
        elif d >= 0:
            word = "**win**" if d > 0 else "tie"
        elif opt - ours <= tie:
            word = f"tie (within {tie} of the optimum)"
        else:
            word = "**loss**"
        out.append(f"B={b}: {word} ({method} {ours:.2f} vs {best_m} {theirs:.2f}, {signed(d)}{_noise(pair, '.2f') if d else ''})")
    text = ("**Reading** (computed from the table; best baseline per budget; a difference under two standard errors of the "
            "per-seed differences is as likely the seeds as the method): " + "; ".join(out) + ".")
    if "predictor" in meth:
        adds = []
        for b in [str(x) for x in res["budgets"]]:
            d = meth[method][b]["best_mean"] - meth["predictor"][b]["best_mean"]
            pair = paired_diff(meth[method][b].get("best", []), meth["predictor"][b].get("best", []))
            adds.append(signed(d) + (f" ± {pair[1]:.2f}" if pair and d else ""))
        text += " What the unit scores add (autobuild − predictor, the same loop without them; ± paired SE): " + " / ".join(adds) + "."
    return text


def verdict_multi(res: dict, method: str = "autobuild") -> str:
    """Computed reading of a two-objective table: AutoBuild's hypervolume ratio against the best
    baseline, with the standard error of the per-seed difference."""
    meth = res["methods"]
    if method not in meth:
        return ""
    out = []
    for b in [str(x) for x in res["budgets"]]:
        ours = meth[method][b]["hv_ratio_mean"]
        other = best_other(meth, b, "hv_ratio", method)
        if other is None:
            continue
        best_m, theirs, pair = other
        d = ours - theirs
        out.append(f"B={b}: {'**win**' if d > 0 else 'tie' if d == 0 else '**loss**'} ({method} {ours:.3f} vs {best_m} {theirs:.3f}, "
                   f"{d:+.3f}{_noise(pair, '.3f') if d else ''})")
    return "**Reading** (computed from the table): " + "; ".join(out) + "."


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def _stats(xs: Sequence[float]) -> tuple[float, float]:
    arr = np.array([x for x in xs if x is not None], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _histories(method: str, space, objective: Objective, budgets, repeats, seed0, settings, progress: Callable[[str], None] | None = None):
    """Yield ``(budget, [history per repeat], seconds)`` for one method. A budget-free method runs
    once per repeat at the largest budget and a smaller budget reads its prefix (its time is then
    the whole run's); the others run once per budget and repeat. ``progress`` gets a line per
    finished repeat (a 200-evaluation AutoBuild repeat takes tens of seconds)."""

    def one(b: int, r: int) -> list:
        t = time.time()
        hist = run_method(method, space, objective, b, seed0 + r, settings)
        if progress is not None:
            best = best_of(hist, objective.directions) if len(objective.directions) == 1 else None
            found = f", best {best:.3f}" if best is not None else ""
            progress(f"{method:>16s} budget {b:>4d}: repeat {r + 1}/{repeats} (seed {seed0 + r}) done in {time.time() - t:.1f}s{found}")
        return hist

    if method in BUDGET_FREE:
        t0 = time.time()
        longest = [one(max(budgets), r) for r in range(repeats)]
        took = time.time() - t0
        for b in budgets:
            yield b, [h[:b] for h in longest], took
        return
    for b in budgets:
        t0 = time.time()
        hists = [one(b, r) for r in range(repeats)]
        yield b, hists, time.time() - t0


def run_single(space, objective: Objective, methods, budgets, repeats, seed0, settings, log: Callable[[str], None],
               progress: Callable[[str], None] | None = None, done: dict | None = None,
               saved: Callable[[dict], None] | None = None) -> dict:
    values = objective.table_values()[:, 0]
    optimum = float(np.nanmax(values))
    out = {"optimum": optimum, "methods": {}}
    for m in methods:
        if done and m in done:  # finished in an earlier, interrupted run with the same options (--resume)
            out["methods"][m] = done[m]
            log(f"{m:>16s}: reused from the results file")
            continue
        out["methods"][m] = {}
        for b, hists, took in _histories(m, space, objective, budgets, repeats, seed0, settings, progress):
            bests = [best_of(h, objective.directions) for h in hists]
            used = [len(h) for h in hists]
            mean, std = _stats(bests)
            cell = {"best_mean": mean, "best_std": std, "regret_mean": optimum - mean, "evaluations_used": float(np.mean(used)),
                    "best": bests, "seconds": round(took, 2), "seconds_per_repeat": round(took / repeats, 2)}
            out["methods"][m][str(b)] = cell
            log(f"{m:>16s} budget {b:>4d}: best {mean:7.3f} ± {std:5.3f}  regret {optimum - mean:6.3f}  evals {np.mean(used):6.1f}  ({cell['seconds']:.1f}s)")
        if saved is not None:
            saved(out)
    return out


def run_multi(space, objective: Objective, methods, budgets, repeats, seed0, settings, log: Callable[[str], None],
              progress: Callable[[str], None] | None = None, done: dict | None = None,
              saved: Callable[[dict], None] | None = None) -> dict:
    from autobuild_core.search import hypervolume_2d, non_dominated

    pts = objective.table_values()
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    dirs = objective.directions
    # Reference point: the table's median on maximised objectives, its worst on minimised ones,
    # so that the hypervolume measures the useful (better than median accuracy) part of the front
    # instead of being dominated by disconnected cells at 10 %.
    ref = [float(np.median(pts[:, j])) if d == "maximize" else float(np.max(pts[:, j])) for j, d in enumerate(dirs)]
    true_front = pts[non_dominated(pts, dirs)]
    hv_true = hypervolume_2d(true_front, ref, dirs)
    out = {"reference_point": ref, "true_front_size": int(len(true_front)), "hv_true": hv_true, "methods": {}}
    for m in methods:
        if done and m in done:  # finished in an earlier, interrupted run with the same options (--resume)
            out["methods"][m] = done[m]
            log(f"{m:>16s}: reused from the results file")
            continue
        out["methods"][m] = {}
        for b, hists, took in _histories(m, space, objective, budgets, repeats, seed0, settings, progress):
            ratios, used = [], []
            for hist in hists:
                ok = [h["values"] for h in hist if h["values"] is not None]
                front = [ok[i] for i in non_dominated(ok, dirs)] if ok else []
                ratios.append(hypervolume_2d(front, ref, dirs) / hv_true if hv_true > 0 else float("nan"))
                used.append(len(hist))
            mean, std = _stats(ratios)
            cell = {"hv_ratio_mean": mean, "hv_ratio_std": std, "hv_ratio": ratios, "evaluations_used": float(np.mean(used)),
                    "seconds": round(took, 2), "seconds_per_repeat": round(took / repeats, 2)}
            out["methods"][m][str(b)] = cell
            log(f"{m:>16s} budget {b:>4d}: HV ratio {mean:6.4f} ± {std:6.4f}  evals {np.mean(used):6.1f}  ({cell['seconds']:.1f}s)")
        if saved is not None:
            saved(out)
    return out


def budget_list(text: str) -> list[int]:
    """Comma-separated positive evaluation budgets (``--budgets``), or a ConfigError naming the problem."""
    try:
        vals = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--budgets must be comma-separated integers, got {text!r}.") from None
    if not vals or any(v < 1 for v in vals):
        raise ConfigError(f"budgets must be positive integers, got {text!r}.")
    return vals


def run(args) -> int:
    import torch

    torch.set_num_threads(max(1, args.threads))
    budgets = budget_list(args.budgets) if args.budgets else [int(args.budget)]
    if args.surrogate:
        bench = load_surrogate_bench(args.surrogate, args.data)
        args.space = bench.space.name
    elif not args.space:
        raise ConfigError("bench search needs --space (nb201, nasbench_graph, transnas_micro) or --surrogate ofa_mbv3 --data DIR.")
    else:
        bench = load_bench(args.space, args.table, args.latency, args.dataset)
    objective = make_objective(bench, args.target, args.objectives)
    multi = len(objective.directions) > 1
    methods = [m.strip() for m in (args.methods or ",".join(MULTI_METHODS if multi else SINGLE_METHODS)).split(",") if m.strip()]
    known = MULTI_METHODS + ("tpe", "predictor") if multi else SINGLE_METHODS
    bad = [m for m in methods if m not in known]
    if bad:
        raise ConfigError(f"unknown method(s) {bad} for a {'Pareto' if multi else 'single-objective'} search; choose from {', '.join(known)}.")
    settings = bench_settings(args.preset, args.overrides)
    log = (lambda s: print(s, flush=True)) if not args.quiet else (lambda s: None)  # flushed: progress shows in a redirected log too
    log(f"bench search: {args.space} ({bench.label}), objective(s) {objective.names}, budgets {budgets}, {args.repeats} repeats, seeds {args.seed}..{args.seed + args.repeats - 1}")
    if bench.only is not None:
        log(f"searching {bench.info['searched']}")
    # what the results depend on: a results file is resumed only when all of it matches
    head = json.loads(json.dumps(dict(
        space=args.space, table=bench.label, dataset=args.dataset, objectives=objective.names, directions=list(objective.directions),
        budgets=budgets, repeats=args.repeats, seeds=[args.seed + r for r in range(args.repeats)],
        preset=args.preset, overrides=list(args.overrides), settings=settings.model_dump(mode="json")), default=str))
    if args.resume and not args.json:
        raise ConfigError("--resume needs --json FILE: the results file of the run to resume.")
    done = _resumable(Path(args.json), head, log) if args.resume else None
    t0 = time.time()

    def saved(partial: dict) -> None:  # after every method, so an interrupted run keeps what it finished
        if args.json:
            _write(Path(args.json), {**partial, **head, **bench.info, "complete": False, "seconds": round(time.time() - t0, 1)})

    runner = run_multi if multi else run_single
    out = runner(bench.space, objective, methods, budgets, args.repeats, args.seed, settings, log, progress=log, done=done, saved=saved)
    out.update(**head, **bench.info, complete=True, seconds=round(time.time() - t0, 1))
    if not multi:
        out["target"] = objective.names[0]
        exact = "" if not args.surrogate or out["surrogate"]["optimum_exact"] else " (best of a local search: a lower bound)"
        log(f"optimum of the {'surrogate' if args.surrogate else 'table'}: {out['optimum']:.4f}{exact}")
    reading = verdict_multi(out) if multi else verdict_single(out)
    if reading:
        log(reading.replace("**", "").replace("; B=", ";\n  B=").replace(". What", ".\n  What"))
    if args.json:
        _write(Path(args.json), out)
        log(f"wrote {args.json}")
    return 0


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)  # never a half-written results file


def _resumable(path: Path, head: dict, log: Callable[[str], None]) -> dict:
    """The finished methods of an earlier results file written with the same options (``--resume``)."""
    if not path.is_file():
        log(f"--resume: {path} does not exist yet, starting from scratch")
        return {}
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume: {path} is not a readable results file ({exc}); move it away or drop --resume.") from None
    differ = [k for k, v in head.items() if prev.get(k) != v]
    if differ:
        shown = "; ".join(f"{k}: file {prev.get(k)!r}, now {head[k]!r}" if k != "settings" else "settings (--preset, --set or the defaults)"
                          for k in differ)
        raise ConfigError(f"--resume: {path} was written with other options ({shown}). Rerun with the same options, or write to another --json.")
    done = dict(prev.get("methods", {}))
    if done:
        log(f"--resume: reusing {', '.join(done)} from {path}")
    return done


def register(sub) -> None:
    p = sub.add_parser(
        "search",
        help="AutoBuild vs random / REA / TPE (or NSGA-II) at equal evaluation budgets on a benchmark table",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--space", help="nb201, nasbench_graph or transnas_micro (or use --surrogate)")
    p.add_argument("--surrogate", choices=sorted(SURROGATES), help="search a space too large to tabulate against a surrogate oracle "
                   "fitted on DATA's measured table (OFA-MobileNetV3 at 224 px, ~2.2e19 subnets; ofa_mbv3: additive ridge, "
                   "exact optimum; ofa_mbv3_gbt: gradient-boosted trees with interactions; see docs/evaluation.md)")
    p.add_argument("--data", help="folder of the benchmark tables, for --surrogate (default $AUTOBUILD_DATA_DIR)")
    p.add_argument("--table", help="benchmark table (nb201: the CIFAR-10 CSV)")
    p.add_argument("--latency", help="nb201 latency CSV (for --objectives with latency:DEVICE)")
    p.add_argument("--dataset", help="nasbench_graph dataset (cora, citeseer, pubmed, ...)")
    p.add_argument("--target", help="metric or expression to maximise (default: the table's accuracy)")
    p.add_argument("--budget", type=int, default=100, help="evaluations per run (default 100)")
    p.add_argument("--budgets", help="comma-separated budgets, overrides --budget")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="repeat r uses seed SEED+r for every method")
    p.add_argument("--methods", help=f"comma-separated; default {','.join(SINGLE_METHODS)} (Pareto: {','.join(MULTI_METHODS)})")
    p.add_argument("--objectives", help="two objectives for a Pareto search, e.g. acc,latency:pixel3")
    p.add_argument("--preset", default="default", choices=["default", "paper"], help="AutoBuild settings to start from (as `autobuild run --preset`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an AutoBuild setting, as in `autobuild run` (e.g. --set seeds.n=10 --set train.epochs=100)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny graphs: 1 is fastest)")
    p.add_argument("--json", help="write results here (updated after every method, so an interrupted run keeps what it finished)")
    p.add_argument("--resume", action="store_true", help="reuse the methods an earlier run with the same options already wrote to --json")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run, interrupt_hint="the methods that finished are in --json (if given); rerun with --resume to keep them.")
