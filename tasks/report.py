"""A self-contained HTML report of one run directory.

Everything is inline (CSS, base64 PNG figures, no scripts or external URLs) so the report can be
mailed or attached to an MLflow run. It reads only the files the run layout names, says why a
section is empty when a file is missing, and renders a failing section as an error in place: a
report must never turn a finished run into a failed one. Figures use matplotlib's Agg canvas
directly, never pyplot, because Prefect runs this in worker threads.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

TOP_CONFIGS = 8  # unit configurations listed per unit
LOW_SPEARMAN = 0.3  # a read-out resting on a rank correlation below this is flagged as not to be trusted
_DPI = 100

_CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; margin: 0; color: #222; background: #f4f5f7; }
header { background: #233247; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 24px; }
header p { margin: 0; color: #c9d3e0; font-size: 14px; }
nav { padding: 8px 32px; background: #e6e9ee; font-size: 13px; }
nav a { margin-right: 14px; color: #233247; }
main { padding: 8px 32px 40px 32px; max-width: 1200px; }
section { background: #fff; border-radius: 6px; padding: 14px 20px; margin: 16px 0; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
h2 { font-size: 19px; margin: 4px 0 10px 0; border-bottom: 2px solid #4477aa; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 14px 0 6px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 10px 0; }
th, td { border: 1px solid #d5d9e0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; word-break: break-all; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: 6px 10px; font-size: 13px; margin: 6px 0; }
.trust { background: #eef4fb; border-left: 4px solid #4477aa; padding: 6px 10px; font-size: 13px; margin: 6px 0; }
.warn { background: #fdecea; border-left: 4px solid #c62828; padding: 6px 10px; font-size: 13px; margin: 6px 0; font-weight: 600; }
.error { background: #fdecea; border-left: 4px solid #c62828; padding: 6px 10px; font-size: 13px; margin: 6px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 12px 28px; }
.grid > div { flex: 0 1 auto; }
.kv th { width: 190px; }
footer { color: #666; font-size: 12px; padding: 0 32px 24px 32px; }
"""


def rounded(v: Any, digits: int = 4) -> Any:
    """``v`` with every float rounded for text a person reads: ``digits`` significant digits and at
    most ``digits`` decimals (79.33333333 -> 79.33, 0.123456 -> 0.1235). Dicts, lists and tuples are
    rounded element-wise; everything else is returned unchanged. Raw values stay in JSON/CSV files."""
    if isinstance(v, (float, np.floating)) and not isinstance(v, bool):
        f = float(v)
        if not math.isfinite(f) or f == 0:
            return f
        return float(f"{f:.{digits}g}") if abs(f) >= 1 else round(f, digits)
    if isinstance(v, dict):
        return {k: rounded(x, digits) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [rounded(x, digits) for x in v]
    return v


# ---- small HTML helpers ------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return str(f)
        if f != 0 and (abs(f) >= 1e6 or abs(f) < 10 ** -digits):
            return f"{f:.{digits}g}"
        text = repr(rounded(f, digits))
        return text[:-2] if text.endswith(".0") else text
    return str(v)


def _json(obj: Any) -> str:
    return json.dumps(rounded(obj), default=str, sort_keys=isinstance(obj, dict))


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] | None = None, cls: str = "") -> str:
    """Rows of plain values; every cell is escaped, numbers are formatted and right-aligned."""
    numeric = list(numeric) if numeric is not None else [False] * len(header)
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            is_num = numeric[i] if i < len(numeric) else False
            text = _fmt(v) if is_num or isinstance(v, (float, np.floating)) else ("–" if v is None else str(v))
            cells.append(f'<td class="num">{_e(text)}</td>' if is_num else f"<td>{_e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    c = f' class="{_e(cls)}"' if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv(pairs: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v) if not isinstance(v, str) else v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


# ---- figures ----------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _img(fig, alt: str) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    # no "Software" tEXt chunk: it would only add a URL to every embedded image
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


# ---- what a run directory holds ---------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class RunData:
    """Everything the report draws from, loaded leniently (None / empty when absent)."""

    run_dir: Path
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    ranker_dir: Path | None = None
    ranker_info: dict = field(default_factory=dict)
    scores: pd.DataFrame | None = None  # unit scores as shown: clipped to the measured target range
    n_clipped: int = 0  # unit scores outside the measured target range (unit_scores.csv keeps them raw)
    importance: pd.DataFrame | None = None
    importance_source: str = ""
    effects: pd.DataFrame | None = None
    effects_source: str = ""
    built: list = field(default_factory=list)
    pruned: dict | None = None
    searches: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    _space: Any = None
    _trained: Any = None

    @property
    def space_name(self) -> str | None:
        return self.summary.get("space") or self.config.get("space")

    def space(self):
        if self._space is None and self.space_name:
            from search_spaces import get_space

            self._space = get_space(self.space_name)
        return self._space

    def trained(self):
        """The saved ranker, loaded on first use (only needed for derived read-outs)."""
        if self._trained is None and self.ranker_dir is not None:
            from autobuild_core.train import TrainedRanker

            self._trained = TrainedRanker.load(self.ranker_dir)
        return self._trained

    def objectives(self) -> list[dict]:
        objs = ((self.config.get("search") or {}).get("objectives")) or []
        if objs:
            return [{"expr": str(o.get("expr")), "direction": o.get("direction", "maximize")} for o in objs]
        target = self.summary.get("target") or self.config.get("target")
        return [{"expr": str(target), "direction": "maximize"}] if target else []

    def ranker_spearman(self) -> tuple[float | None, str]:
        """The ranker's held-out Spearman and what it was measured on."""
        rk = self.summary.get("ranker") or {}
        v = rk.get("heldout_spearman", self.ranker_info.get("pred_spearman"))
        on = rk.get("spearman_on") or self.ranker_info.get("spearman_on") or "unknown"
        return (None if v is None else float(v)), str(on)

    def hop_spearman(self) -> list:
        rk = self.summary.get("ranker") or {}
        return [float(h) for h in (rk.get("hop_spearman") or self.ranker_info.get("hop_spearman") or [])]

    def target_range(self) -> tuple[float, float] | None:
        """(min, max) of the target the ranker was trained on (oriented so larger is better)."""
        r = self.ranker_info.get("target_range") or (self.summary.get("ranker") or {}).get("target_range")
        return (float(r[0]), float(r[1])) if r and len(r) == 2 else None

    def history(self) -> list:
        """Training history: the stage's info.json first, else the ranker's own ranker.json."""
        hist = self.ranker_info.get("history")
        if not hist and self.ranker_dir is not None:
            meta = _read_json(self.ranker_dir / "ranker.json") or {}
            hist = meta.get("history")
        return list(hist or [])


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read a run's outputs through its :class:`~tasks.layout.RunLayout`: the stage directories
    this run used are the ones ``summary.json`` records, never a guess among older stages."""
    from tasks.layout import RunLayout

    lay = RunLayout(run_dir)
    data = RunData(run_dir=lay.root)
    data.summary = _read_json(lay.summary) or {}
    if not data.summary:
        data.problems.append("summary.json is missing or unreadable (the run may not have finished)")
    data.config = _read_json(lay.config) or {}

    rdir = lay.used_stage(data.summary, "ranker")
    if rdir is not None and (rdir / "ranker" / "ranker.json").is_file():
        data.ranker_dir = rdir / "ranker"
        data.ranker_info = _read_json(rdir / "info.json") or {}
    sdir = lay.used_stage(data.summary, "scores")
    if sdir is not None:
        if (sdir / "unit_scores.csv").is_file():
            data.scores = pd.read_csv(sdir / "unit_scores.csv")
            rng = data.target_range()
            if rng is not None and len(data.scores):
                raw = data.scores["score"].astype(float)
                data.n_clipped = int(((raw < rng[0]) | (raw > rng[1])).sum())
                data.scores["score"] = raw.clip(rng[0], rng[1])
        if (sdir / "importance.csv").is_file():
            data.importance = pd.read_csv(sdir / "importance.csv")
            data.importance_source = "importance.csv of the scoring stage"
        if (sdir / "op_effects.csv").is_file():
            data.effects = pd.read_csv(sdir / "op_effects.csv")
            data.effects_source = "op_effects.csv of the scoring stage"

    bj = _read_json(lay.built)
    if isinstance(bj, dict):
        data.built = list(bj.get("built") or [])
        data.pruned = bj.get("pruned")

    s = _read_json(lay.search_json("run"))
    if isinstance(s, dict) and isinstance(s.get("history"), list):
        data.searches["run"] = s
    return data


# ---- how far to trust a read-out ------------------------------------------------------------


def _trust(d: RunData, what: str, spearman: float | None = None, of: str = "the ranker's prediction") -> str:
    """One line stating the rank correlation ``what`` rests on, and a visible warning when it is
    below :data:`LOW_SPEARMAN` (or unknown). Default: the ranker's held-out Spearman."""
    on = None
    if spearman is None:
        spearman, on = d.ranker_spearman()
    where = f" on its {on} set" if on else ""
    if spearman is None:
        return (f'<p class="warn">{_e(what)} rests on the ranker, whose held-out Spearman is unknown '
                "(no ranker stage recorded): do not rely on it.</p>")
    text = f"{what} rests on {of}: Spearman {_fmt(spearman, 2)}{where}"
    if on == "training":
        return f'<p class="warn">{_e(text)}. Measured on the training set (no validation split), so it overstates the trust.</p>'
    if spearman < LOW_SPEARMAN:
        return (f'<p class="warn">Low trust: {_e(text)}, below {LOW_SPEARMAN}. The ranking shown is close to noise: '
                "do not act on it; evaluate more seeds or train longer.</p>")
    return f'<p class="trust">{_e(text)} (1 = perfect ranking, 0 = none; warned below {LOW_SPEARMAN}).</p>'


# ---- sections ---------------------------------------------------------------------------------


@dataclass
class Section:
    id: str
    title: str
    render: Callable[[RunData], str]


def _overview(d: RunData) -> str:
    s, cfg = d.summary, d.config
    ev = s.get("evaluator") or cfg.get("evaluator") or {}
    evals = s.get("evaluations") or {}
    rk = s.get("ranker") or {}
    objs = d.objectives()
    pairs = [
        ("run name", s.get("name") or cfg.get("name") or d.run_dir.name),
        ("status", s.get("status", "unknown")),
        ("search space", d.space_name or "unknown"),
        ("evaluator", f"{ev.get('kind', 'unknown')}  {_json(ev.get('settings') or {})}"),
        ("target", s.get("target") or cfg.get("target") or "unknown"),
        ("objectives", ", ".join(f"{o['direction']} {o['expr']}" for o in objs) or "–"),
        ("run directory", str(d.run_dir)),
    ]
    if s.get("mlflow_run_id"):
        pairs.append(("MLflow run", s["mlflow_run_id"]))
    if s.get("prefect_flow_run_id"):
        pairs.append(("Prefect flow run", s["prefect_flow_run_id"]))
    if s.get("error"):
        pairs.append(("error", s["error"]))
    out = [_kv(pairs)]
    for p in d.problems:
        out.append(_note(p))
    if (s.get("seed_ranker") or {}).get("skipped"):
        out.append(_note(f"Seed ranker skipped: {s['seed_ranker']['why']}"))
    if s.get("searched_table_rows"):
        out.append(_note(f"The evaluator's table holds {s['searched_table_rows']} architectures, a part of the space: "
                         "seeds and the search drew from them alone."))

    grid = []
    if evals:
        rows = [(k, evals.get(k)) for k in ("total", "new", "reused", "failed") if k in evals]
        block = "<h3>Evaluations</h3>" + _table(["", "architectures"], rows, [False, True])
        if s.get("final_evaluations"):
            fe = s["final_evaluations"]
            block += "<h3>Final-protocol evaluations</h3>" + _table(["", "architectures"], list(fe.items()), [False, True])
        grid.append(block)
    else:
        grid.append("<h3>Evaluations</h3>" + _note("No evaluation counts in summary.json."))
    if rk:
        rng = d.target_range()
        grid.append("<h3>Ranker</h3>" + _kv([("Spearman (prediction)", rk.get("heldout_spearman")),
                                              ("measured on", rk.get("spearman_on", "–")),
                                              ("training architectures", rk.get("n_train")),
                                              ("measured target range", "–" if rng is None else f"{_fmt(rng[0])} to {_fmt(rng[1])}")])
                    + _trust(d, "Everything the report derives from the ranker"))
    if d.pruned:
        grid.append("<h3>Pruned space</h3>" + _kv([("size", d.pruned.get("size")), ("k per unit", _json(d.pruned.get("k")))]))
    out.append('<div class="grid">' + "".join(f"<div>{g}</div>" for g in grid) + "</div>")

    times = {k: float(v) for k, v in (s.get("stage_seconds") or {}).items() if isinstance(v, (int, float))}
    if times:
        stages = [k for k in times if k != "total"]
        tbl = _table(["stage", "seconds"], [(k, times[k]) for k in stages] + ([("total", times["total"])] if "total" in times else []),
                     [False, True])
        fig = _figure(6.0, 0.35 * max(3, len(stages)) + 0.8)
        ax = fig.subplots()
        ax.barh(range(len(stages)), [times[k] for k in stages], color="#4477aa")
        ax.set_yticks(range(len(stages)), stages)
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.set_title("wall time per stage")
        out.append(f'<h3>Stage times</h3><div class="grid"><div>{tbl}</div><div>{_img(fig, "wall time per stage")}</div></div>')
    else:
        out.append("<h3>Stage times</h3>" + _note("No stage times in summary.json."))

    if d.built:
        rows = []
        for b in d.built:
            m = b.get("values")
            rows.append((_json(b.get("arch")), _json(m) if m else f"not evaluated: {b.get('error') or 'failed'}"))
        out.append("<h3>Built architectures</h3>" + _table(["architecture", "objective values"], rows))
    winners = s.get("winners") or []
    if winners:
        rows = [(w.get("rank"), w.get("target"), _json(w.get("arch")), _json(w.get("metrics")) if w.get("metrics") else (w.get("error") or "–"))
                for w in winners]
        out.append("<h3>Winners (final protocol)</h3>" + _table(["rank", "target", "architecture", "metrics"], rows, [True, True, False, False]))
    best = s.get("best")
    if best:
        out.append("<h3>Best architecture</h3>" + _kv([("architecture", _json(best.get("arch"))), ("target", best.get("target")),
                                                       ("metrics", _json(best.get("metrics"))), ("from", best.get("source", "–"))]))
    return "".join(out)


def _r(v: Any, nd: int) -> Any:
    return round(float(v), nd) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else v


def _calibration(d: RunData) -> str:
    c = d.summary.get("calibration")
    if not c:
        # normal for table evaluators, so a plain line rather than a note about missing data
        return "<p>Not calibrated: the evaluator is not a training evaluator, or calibration.enabled is false.</p>"
    chosen = c.get("chosen") or {}
    label = f"{chosen.get('epochs')} epochs x {chosen.get('n_train') or 'all'} images" if chosen else "none: no budget ranks"
    out = [_kv([("status", c.get("status")), ("chosen budget", label), ("metric", c.get("metric")), ("threshold (ceiling)", c.get("threshold")),
                ("architectures x seeds", f"{c.get('n_archs')} x {c.get('seeds')}"),
                ("evaluation seconds", _r(c.get("seconds"), 1)), ("trainings new / reused", f"{c.get('new')} / {c.get('reused')}")])]
    rows = [(r.get("budget"), r.get("images"), _r(r.get("spearman"), 3), _r(r.get("ceiling"), 3), r.get("n_pairs"),
             r.get("failed"), _r(r.get("seconds_per_arch"), 1), _r(r.get("seconds"), 1),
             "chosen" if chosen and r.get("epochs") == chosen.get("epochs") and r.get("n_train") == chosen.get("n_train") else "")
            for r in c.get("budgets") or []]
    rows += [(s.get("budget"), s.get("images"), None, None, None, None, _r(s.get("predicted_seconds_per_arch"), 1),
              _r(s.get("predicted_seconds"), 1), f"not trained: {s.get('reason')}") for s in c.get("skipped") or []]
    out.append(_table(["budget", "training images", "Spearman between seeds", "ceiling", "pairs", "failed", "s / training", "seconds", ""],
                      rows, [False, True, True, True, True, True, True, True, False]))
    if c.get("status") != "chosen" and c.get("message"):
        out.append(f"<pre>{_e(c['message'])}</pre>")
    return "".join(out)


def _effects(d: RunData) -> str:
    eff = d.effects
    if eff is None and d.ranker_dir is not None:
        # older runs (or a missing CSV): one saved ranker, so the interval covers contexts only
        from autobuild_core.importance import op_effects

        eff = op_effects(d.trained(), d.space(), n_context=1024, seed=0)
        d.effects, d.effects_source = eff, "recomputed from the saved ranker (one ranker: the interval covers the sampled architectures only, not training-data uncertainty)"
    if eff is None or len(eff) == 0:
        return _note("No feature-value effects: neither the scoring stage's op_effects.csv nor a saved ranker is in this run directory.")
    eff = eff.copy()
    if "group" not in eff.columns:
        eff["group"] = "all"
    eff["group"] = eff["group"].fillna("all").astype(str)
    n_models = int(eff["n_models"].iloc[0]) if "n_models" in eff.columns and len(eff) else None
    level = float(eff["level"].iloc[0]) if "level" in eff.columns and len(eff) else 0.95
    note = (f"<p>Source: {_e(d.effects_source)}. Effect of a feature value on the target, as the ranker predicts it: mean predicted target "
            "of architectures holding the value (weighted by the share of the feature's nodes that hold it) minus the mean over all "
            f"{_e(_fmt(eff['n_contexts'].iloc[0]) if 'n_contexts' in eff.columns else 'the sampled')} architectures averaged over, in the "
            f"target's units. Bars: estimate; whiskers: {level:.0%} interval"
            + (f" from {n_models} ranker(s) and a bootstrap over the architectures" if n_models else "")
            + ". A whisker that crosses zero means the sign is not established.</p>")
    panels = list(dict.fromkeys(zip(eff["feature"].astype(str), eff["group"])))
    n = len(panels)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    tallest = max(len(eff[(eff["feature"].astype(str) == f) & (eff["group"] == g)]) for f, g in panels)
    fig = _figure(4.2 * cols, max(2.4, 0.26 * tallest + 1.0) * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    for ax, (f, g) in zip(axes, panels):
        sub = eff[(eff["feature"].astype(str) == f) & (eff["group"] == g)]
        vals = sub["effect"].to_numpy(dtype=float)
        lo = sub["ci_low"].to_numpy(dtype=float) if "ci_low" in sub else vals
        hi = sub["ci_high"].to_numpy(dtype=float) if "ci_high" in sub else vals
        colors = ["#4477aa" if v >= 0 else "#cc6633" for v in vals]
        ax.barh(range(len(vals)), vals, color=colors,
                xerr=np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)]), capsize=3, ecolor="#333333")
        ax.axvline(0, color="#555555", linewidth=0.8)
        ax.set_yticks(range(len(vals)), [str(v) for v in sub["value"]], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f if g == "all" else f"{f} ({g})", fontsize=10)
        ax.set_xlabel("effect on the target (model estimate)", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    parts = [_trust(d, "This chart"), note, _img(fig, "Feature-value effects with intervals")]
    cols_ = [c for c in ("feature", "group", "value", "effect", "ci_low", "ci_high", "sign", "sign_agreement", "rank", "n_models") if c in eff.columns]
    rows = [[r[c] for c in cols_] for _, r in eff[cols_].iterrows()]
    parts.append("<details><summary>All feature values</summary>"
                 + _table(cols_, rows, [c in ("effect", "ci_low", "ci_high", "sign_agreement", "rank", "n_models") for c in cols_]) + "</details>")
    return "".join(parts)


def _importance(d: RunData) -> str:
    from autobuild_core.importance import FE_MLP_LABEL

    imp = d.importance
    note = ""
    if imp is None and d.ranker_dir is not None:
        # older runs (or a missing CSV): the FE-MLP read-out needs nothing but the ranker
        from autobuild_core.importance import fe_mlp_readout

        imp = fe_mlp_readout(d.trained(), d.space())
        d.importance, d.importance_source = imp, "recomputed from the saved ranker"
    if imp is None or len(imp) == 0:
        return _note("No FE-MLP read-out: neither the scoring stage's importance.csv nor a saved ranker is in this run directory.")
    if d.importance_source:
        note = (f"<p>Source: {_e(d.importance_source)}. Value: |FE-MLP scalar| of each feature value (hop 0), the paper's read-out. "
                "It is a magnitude the network may use in either direction: it does not say whether a value helps or hurts, and its "
                "order can change from one training seed to the next. For what a value does to the target, see the effects section.</p>")
    feats = list(dict.fromkeys(imp["feature"].astype(str)))
    n = len(feats)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    heights = []
    for f in feats:
        heights.append(len(imp[imp["feature"].astype(str) == f]))
    fig = _figure(4.2 * cols, max(2.4, 0.22 * max(heights) + 1.0) * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    for ax, f in zip(axes, feats):
        sub = imp[imp["feature"].astype(str) == f]
        labels = [str(v) for v in sub["value"]]
        vals = sub["score"].to_numpy(dtype=float)
        ax.barh(range(len(vals)), vals, color="#999999")
        ax.set_yticks(range(len(vals)), labels, fontsize=8)
        ax.invert_yaxis()
        kind = str(sub["kind"].iloc[0]) if "kind" in sub else ""
        ax.set_title(f"{f} ({kind})" if kind else f, fontsize=10)
        ax.set_xlabel("|FE-MLP scalar|", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(FE_MLP_LABEL, fontsize=10)
    parts = [_trust(d, "This chart"), note, _img(fig, FE_MLP_LABEL)]
    cols_ = [c for c in ("feature", "kind", "value", "score", "count", "spread") if c in imp.columns]
    rows = [[r[c] for c in cols_] for _, r in imp[cols_].iterrows()]
    parts.append("<details><summary>All feature values</summary>"
                 + _table(["|FE-MLP scalar|" if c == "score" else c for c in cols_], rows, [c in ("score", "count", "spread") for c in cols_])
                 + "</details>")
    return "".join(parts)


def _unit_names(scores: pd.DataFrame) -> dict:
    if "unit_name" in scores:
        return {int(u): str(n) for u, n in scores.groupby("unit")["unit_name"].first().items()}
    return {int(u): f"unit {u}" for u in scores["unit"].unique()}


def _unit_configs(d: RunData) -> str:
    sc = d.scores
    if sc is None or len(sc) == 0:
        return _note("No unit scores: the scoring stage did not run or its unit_scores.csv is missing.")
    names = _unit_names(sc)
    units = sorted(names)
    method = str(sc["method"].iloc[0]) if "method" in sc and len(sc) else "paper"
    hops = d.hop_spearman()
    by_hop = method != "marginal" and "hop" in sc and bool(hops)
    out = [f"<p>{len(sc):,} unit configurations scored ({_e(method)} method); the top {TOP_CONFIGS} of each unit by score, "
           "the ranker's estimate of the target in its units, with the prediction hop that covers the unit.</p>",
           _trust(d, "The ranker behind these scores")]
    rng = d.target_range()
    if rng is None:
        out.append(_note("The measured range of the target is not recorded with this ranker, so scores are shown unclipped: "
                         "they may lie outside anything measured."))
    else:
        out.append(f"<p>Scores are kept within the measured target range, {_e(_fmt(rng[0]))} to {_e(_fmt(rng[1]))}: "
                   f"{d.n_clipped:,} of {len(sc):,} lay outside it and are shown at its edge (raw values stay in unit_scores.csv).</p>")
    fig = _figure(max(5.0, 1.3 * len(units) + 1.5), 3.6)
    ax = fig.subplots()
    data = [sc.loc[sc["unit"] == u, "score"].to_numpy(dtype=float) for u in units]
    parts = ax.violinplot(data, showextrema=False)
    for b in parts["bodies"]:
        b.set_facecolor("#88aadd")
        b.set_alpha(0.6)
    ax.boxplot(data, widths=0.15, showfliers=False)
    for i, arr in enumerate(data, start=1):
        if len(arr):
            ax.scatter([i], [arr.max()], marker="*", color="#cc6633", zorder=3, s=60)
    ax.set_xticks(range(1, len(units) + 1), [f"{names[u]}\n(n={len(a)})" for u, a in zip(units, data)], fontsize=8)
    ax.set_ylabel("score (target units, measured range)" if rng is not None else "score (target units)")
    ax.set_title("score distribution per unit (star: top configuration)")
    out.append(_img(fig, "unit configuration score distributions"))
    blocks = []
    for u in units:
        sub = sc[sc["unit"] == u].sort_values("score", ascending=False, kind="stable").head(TOP_CONFIGS)
        label_col = "label" if "label" in sub else "config"
        rows = [(int(r["rank"]) if "rank" in sub else i + 1, r[label_col], int(r["depth"]) if "depth" in sub else None,
                 int(r["hop"]) if "hop" in sub else None, float(r["score"])) for i, (_, r) in enumerate(sub.iterrows())]
        if by_hop:
            used = sorted({int(h) for h in sc.loc[sc["unit"] == u, "hop"] if 0 <= int(h) < len(hops)})
            worst = min(used, key=lambda h: hops[h]) if used else None
            trust = "" if worst is None else _trust(d, f"{names[u]}'s scores", hops[worst], of=f"hop {worst}'s embedding norm")
        else:
            trust = ""
        blocks.append(f"<div><h3>{_e(names[u])}</h3>{trust}"
                      + _table(["rank", "configuration", "depth", "hop", "score"], rows, [True, False, True, True, True]) + "</div>")
    out.append('<div class="grid">' + "".join(blocks) + "</div>")
    return "".join(out)


def _hop_spearman(d: RunData) -> str:
    rk = d.summary.get("ranker") or {}
    hops = rk.get("hop_spearman") or d.ranker_info.get("hop_spearman")
    pred = rk.get("heldout_spearman", d.ranker_info.get("pred_spearman"))
    on = rk.get("spearman_on") or d.ranker_info.get("spearman_on") or "–"
    if not hops:
        hist = [h for h in d.history() if h.get("val_hop_spearman")]
        if hist:
            hops, on = hist[-1]["val_hop_spearman"], "validation (last epoch)"
    if not hops:
        return _note("No per-hop Spearman: the ranker stage did not finish.")
    hops = [float(h) for h in hops]
    fig = _figure(5.5, 3.3)
    ax = fig.subplots()
    ax.bar(range(len(hops)), hops, color="#4477aa")
    for i, h in enumerate(hops):
        ax.text(i, h + (0.02 if h >= 0 else -0.06), f"{h:.2f}", ha="center", fontsize=8)
    if pred is not None:
        ax.axhline(float(pred), color="#cc6633", linestyle="--", label=f"prediction {float(pred):.3f}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xticks(range(len(hops)))
    ax.set_xlabel("hop m")
    ax.set_ylabel("Spearman(‖h_G^m‖₁, target)")
    low = min([0.0, *hops] + ([float(pred)] if pred is not None else []))
    ax.set_ylim(low - 0.1 if low < 0 else 0.0, 1.05)
    ax.set_title("per-hop Spearman")
    tbl = _table(["hop", "Spearman"], [(i, h) for i, h in enumerate(hops)] + [("prediction", pred)], [False, True])
    low_hops = [i for i, h in enumerate(hops) if h < LOW_SPEARMAN]
    warn = (f'<p class="warn">Hop(s) {", ".join(map(str, low_hops))} rank the architectures with Spearman below {LOW_SPEARMAN}: '
            "unit scores read at those hops are not to be trusted.</p>") if low_hops else ""
    return (f"<p>Measured on: {_e(on)}. Hop m's score is the L1 norm of the graph embedding after m message-passing "
            f"layers; its rank correlation with the target is what makes unit scores meaningful.</p>{warn}"
            f'<div class="grid"><div>{_img(fig, "per-hop Spearman")}</div><div>{tbl}</div></div>')


def _training(d: RunData) -> str:
    hist = d.history()
    if not hist:
        return _note("No training history saved with the ranker.")
    ep = [h.get("epoch", i) for i, h in enumerate(hist)]
    fig = _figure(10.0, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    for k, c in (("loss", "#222222"), ("mse", "#4477aa"), ("rank_loss", "#cc6633")):
        ys = [h.get(k) for h in hist]
        if any(isinstance(y, (int, float)) for y in ys):
            ax1.plot(ep, [float(y) if isinstance(y, (int, float)) else math.nan for y in ys], label=k, color=c)
    ax1.set_xlabel("epoch")
    ax1.set_title("training loss")
    ax1.legend(fontsize=8)
    vs = [(e, h.get("val_pred_spearman")) for e, h in zip(ep, hist) if isinstance(h.get("val_pred_spearman"), (int, float))]
    if vs:
        ax2.plot([e for e, _ in vs], [v for _, v in vs], marker="o", label="prediction", color="#222222")
        vh = [(e, h["val_hop_spearman"]) for e, h in zip(ep, hist) if h.get("val_hop_spearman")]
        if vh:
            arr = np.array([v for _, v in vh], dtype=float)
            for m in range(arr.shape[1]):
                ax2.plot([e for e, _ in vh], arr[:, m], linewidth=1, marker=".", alpha=0.8, label=f"hop {m}")
        ax2.legend(fontsize=7, ncol=2)
        ax2.set_title("validation Spearman")
    else:
        ax2.text(0.5, 0.5, "no validation split", ha="center", va="center", transform=ax2.transAxes)
        ax2.set_title("validation Spearman")
    ax2.set_xlabel("epoch")
    last = hist[-1]
    keys = [k for k in ("loss", "mse", "rank_loss", "val_pred_spearman") if isinstance(last.get(k), (int, float))]
    tbl = _table(["last epoch", *keys], [[last.get("epoch", len(hist) - 1), *[last[k] for k in keys]]], [True] * (len(keys) + 1))
    return _img(fig, "training curves") + tbl


# -- the built architecture as a graph --


def _graph_rows(g) -> list[tuple]:
    cat = g.x_cat.tolist()
    cont = [[round(float(v), 6) for v in row] for row in g.x_cont.tolist()]
    return [tuple(a) + tuple(b) for a, b in zip(cat, cont)]


def node_units(space, arch, graph) -> tuple[list, list]:
    """(unit or None, layer index or None) of each node of ``space.to_graph(arch)``.

    Spaces do not say which node belongs to which unit, but the contract guarantees that a unit's
    ``unit_graph`` reproduces its nodes exactly as they appear in the whole network (same features,
    same receptive field), so a node is matched to the unit whose unit graph contains an identical
    feature row. Nodes that belong to no unit (a cell's input, a GNN's input) stay None."""
    rows = _graph_rows(graph)
    owner: list = [None] * len(rows)
    layer: list = [None] * len(rows)
    g = arch.global_dict
    for u, cfg in enumerate(arch.units):
        ug = space.unit_graph(u, cfg, g)
        for k, r in enumerate(_graph_rows(ug.graph)):
            for i, rr in enumerate(rows):
                if owner[i] is None and rr == r:
                    owner[i], layer[i] = u, (k if k < len(cfg) else None)
    return owner, layer


def _layers(n: int, edges: list[tuple[int, int]]) -> list[int]:
    """Longest-path layering: a chain becomes a line, a cell becomes columns by data-flow depth."""
    depth = [0] * n
    preds: dict[int, list[int]] = {i: [] for i in range(n)}
    for s, t in edges:
        preds[t].append(s)
    for _ in range(n):  # Bellman-style relaxation; graphs here are tiny DAGs
        changed = False
        for t in range(n):
            for s in preds[t]:
                if depth[s] + 1 > depth[t]:
                    depth[t] = depth[s] + 1
                    changed = True
        if not changed:
            break
    return depth


def _config_score(scores: pd.DataFrame | None, unit: int, config) -> float | None:
    if scores is None or len(scores) == 0:
        return None
    want = [list(layer) for layer in config]
    sub = scores[scores["unit"] == unit]
    for c, s in zip(sub["config"], sub["score"]):
        try:
            if json.loads(c) == want:
                return float(s)
        except (TypeError, ValueError):
            continue
    return None


def _draw_arch(d: RunData, native: Any, title: str) -> str:
    import torch
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import FancyArrowPatch

    space = d.space()
    arch = space.parse(native)
    graph = space.to_graph(arch)
    n = graph.num_nodes
    edges = [tuple(map(int, e)) for e in graph.edge_index.t().tolist()]
    owner, layer = node_units(space, arch, graph)
    unit_names = [us.name for us in space.units]

    values: list = [None] * n
    legend = ""
    unit_scores = {u: _config_score(d.scores, u, cfg) for u, cfg in enumerate(arch.units)}
    if any(v is not None for v in unit_scores.values()):
        values = [unit_scores.get(o) if o is not None else None for o in owner]
        legend = "score of the node's unit configuration (target units, measured range)"
    elif d.ranker_dir is not None:
        with torch.no_grad():
            hs = d.trained().model.node_embeddings(graph.x_cat, graph.x_cont, graph.edge_index)
        values = [float(v) for v in hs[-1].abs().sum(1)]
        legend = "node embedding L1 norm at the last hop"

    depth = _layers(n, edges)
    n_layers = max(depth) + 1
    by_layer: dict[int, list[int]] = {}
    for i, L in enumerate(depth):
        by_layer.setdefault(L, []).append(i)
    chain = all(len(v) == 1 for v in by_layer.values())
    pos = {}
    if chain and n > 12:  # long macro chains wrap into rows so labels stay readable
        per_row = 12
        for i, L in enumerate(depth):
            r, c = divmod(L, per_row)
            pos[i] = (c if r % 2 == 0 else per_row - 1 - c, -1.4 * r)
        width, height = 13.0, 1.6 * math.ceil(n_layers / per_row) + 1.2
    else:
        for L, nodes in by_layer.items():
            k = len(nodes)
            for j, i in enumerate(sorted(nodes, key=lambda i: (owner[i] if owner[i] is not None else -1, i))):
                pos[i] = (L, (k - 1) / 2 - j)
        tallest = max(len(v) for v in by_layer.values())
        width, height = min(13.0, 1.5 * n_layers + 2.5), 1.1 * tallest + 1.6

    fig = _figure(width, height)
    ax = fig.subplots()
    finite = [v for v in values if v is not None and math.isfinite(v)]
    cmap = colormaps["viridis"]
    norm = Normalize(min(finite), max(finite) if max(finite) > min(finite) else min(finite) + 1e-9) if finite else None
    for s, t in edges:
        (x0, y0), (x1, y1) = pos[s], pos[t]
        rad = 0.0 if abs(depth[t] - depth[s]) <= 1 or chain else 0.25
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10, color="#888888",
                                     connectionstyle=f"arc3,rad={rad}", shrinkA=14, shrinkB=14, linewidth=1, zorder=1))
    with_exit = {o for o, k in zip(owner, layer) if o is not None and k is None}
    for i in range(n):
        x, y = pos[i]
        v = values[i]
        face = cmap(norm(v)) if (v is not None and norm is not None) else "#cccccc"
        ax.scatter([x], [y], s=900, color=face, edgecolors="#333333", linewidths=1, zorder=2)
        o, k = owner[i], layer[i]
        if o is None:
            label = "input" if not any(t == i for _, t in edges) else "node"
        elif k is None:
            label = unit_names[o]
        else:
            label = "/".join(str(x_) for x_ in arch.units[o][k])
        ax.text(x, y - 0.36, label, ha="center", va="top", fontsize=7, zorder=3)
        if k == 0 and o not in with_exit:  # macro chains: mark where each unit starts
            ax.text(x, y + 0.3, unit_names[o], ha="center", va="bottom", fontsize=7, fontweight="bold", zorder=3)
        if v is not None:
            lum = sum(face[:3]) / 3 if not isinstance(face, str) else 0.8
            ax.text(x, y, f"{v:.3g}", ha="center", va="center", fontsize=6.5, zorder=3, color="white" if lum < 0.5 else "black")
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.6)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    if norm is not None:
        cb = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.03, pad=0.01)
        cb.set_label(legend, fontsize=7)
        cb.ax.tick_params(labelsize=7)
    rows = [(unit_names[u], space.format_config(u, cfg), unit_scores.get(u)) for u, cfg in enumerate(arch.units)]
    info = _table(["unit", "configuration", "score"], rows, [False, False, True])
    if arch.globals:
        info += _table(["global", "value"], [(k, v) for k, v in arch.globals])
    caption = f"<p>Colour: {_e(legend)}; grey nodes belong to no unit.</p>" if legend else _note("No unit scores or ranker: nodes are not coloured.")
    return _img(fig, title) + caption + info


def _architecture(d: RunData) -> str:
    if d.built:
        native, title, what = d.built[0].get("arch"), "built architecture (top-scored configuration per unit)", "built"
        m = d.built[0].get("metrics")
    elif (d.summary.get("best") or {}).get("arch") is not None:
        native, title, what = d.summary["best"]["arch"], "best architecture found", "best"
        m = d.summary["best"].get("metrics")
    else:
        return _note("No built architecture: the build stage did not run (build.enabled=false) or did not finish.")
    if d.space() is None:
        return _note("The run's search space is unknown (no summary.json or config.json), so the architecture cannot be drawn.")
    out = [] if what == "built" else [_note("No built architecture in this run; drawing the best one found instead.")]
    out.append(_trust(d, "The node colours (unit scores)"))
    out.append(f"<p>Architecture: <code>{_e(_json(native))}</code></p>")
    if m:
        out.append(f"<p>Evaluated metrics: <code>{_e(_json(m))}</code></p>")
    out.append(_draw_arch(d, native, title))
    if len(d.built) > 1:
        out.append(f"<p>{len(d.built) - 1} further built architecture(s) are listed in the overview.</p>")
    return "".join(out)


def _search(d: RunData) -> str:
    if not d.searches:
        return _note("No search in this run (search.enabled=false, or it did not finish).")
    objs = d.objectives()
    name0 = objs[0]["expr"] if objs else "objective 0"
    fig = _figure(7.0, 3.8)
    ax = fig.subplots()
    colors = {"pruned": "#cc6633", "full": "#4477aa"}
    rows = []
    for which, s in d.searches.items():
        c = colors.get(which, None)
        hist = s.get("history") or []
        traj = [math.nan if v is None else float(v) for v in (s.get("trajectory") or [])]
        xs = [h.get("n_eval", i + 1) for i, h in enumerate(hist)] if len(hist) == len(traj) else list(range(1, len(traj) + 1))
        pts = [(h.get("n_eval", i + 1), h["values"][0]) for i, h in enumerate(hist) if h.get("values")]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, alpha=0.35, color=c)
        if traj:
            ax.step(xs, traj, where="post", label=f"{which} space ({s.get('method', '?')}), best so far", color=c, linewidth=2)
        best = s.get("best") or {}
        bv = (best.get("values") or [None])[0]
        rows.append((which, s.get("method"), s.get("n_eval"), s.get("domain_size"), bv, _json(best.get("arch")) if best else "–"))
    ax.set_xlabel("evaluations")
    ax.set_ylabel(name0)
    ax.set_title("search trajectory (dots: each evaluation)")
    ax.legend(fontsize=8)
    out = [_img(fig, "search trajectory"),
           _table(["space", "method", "evaluations", "space size", f"best {name0}", "best architecture"], rows, [False, False, True, True, True, False])]
    if len(d.searches) == 1:
        out.append(_note("Only one search ran; set search.space=both to compare the pruned space with the full one at the same budget."))
    return "".join(out)


def _rounds(d: RunData) -> str:
    """What the ranker learned, round by round (iterative search): held-out Spearman, the pruned
    space, top unit configurations that changed, and where the model's good picks came from."""
    rounds = [(which, r) for which, s in d.searches.items() for r in (s.get("rounds") or [])]
    if not rounds:
        return _note("No search rounds in this run: the iterative methods (search.method autobuild or predictor) record them.")
    fig = _figure(7.0, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    xs = [r.get("round") for _, r in rounds]
    ax1.plot(xs, [math.nan if r.get("val_spearman") is None else r["val_spearman"] for _, r in rounds], marker="o", color="#222222")
    ax1.set_xlabel("round")
    ax1.set_ylabel("held-out Spearman (ensemble mean)")
    ax1.set_ylim(-1, 1)
    sources = sorted({src for _, r in rounds for src in (r.get("source_percentile") or {})})
    for src in sources:
        ys = [(r.get("source_percentile") or {}).get(src, [math.nan])[0] for _, r in rounds]
        ax2.plot(xs, ys, marker=".", label=src)
    ax2.set_xlabel("round")
    ax2.set_ylabel("mean percentile of model picks (1 = best)")
    ax2.set_ylim(0, 1)
    if sources:
        ax2.legend(fontsize=8, title="pick came from", title_fontsize=8)
    rows = []
    for _, r in rounds:
        pr = r.get("pruned") or {}
        changed = "; ".join(f"unit {c['unit']}: {c['before']} → {c['after']}" for c in r.get("changed") or []) or "–"
        picks = ", ".join(f"{src} {v[0]:.2f} (n={v[1]})" for src, v in (r.get("source_percentile") or {}).items()) or "–"
        rows.append((r.get("round"), r.get("n_evaluated"), r.get("val_spearman"), pr.get("size"), changed, picks, len(r.get("batch") or [])))
    table = _table(["round", "trained on", "held-out Spearman", "pruned space size", "top configuration changed",
                    "model picks so far: mean percentile by origin", "batch"], rows, [True, True, True, True, False, False, True])
    return (_img(fig, "search rounds") + table
            + _note("Held-out Spearman: the ranker ensemble on its validation splits (few points in early rounds). "
                    "Origin of a pick: neighbour (one edit from the best so far), units (the unit-score-pruned space), "
                    "uniform (random). Unit scores of each round: round_NNN_unit_scores.csv in the search stage."))


def _pareto(d: RunData) -> str:
    objs = d.objectives()
    if len(objs) != 2:
        return _note(f"The run has {len(objs)} objective(s); a Pareto front is drawn for two (search.objectives).")
    if not d.searches:
        return _note("No search in this run, so there is no Pareto front.")
    from autobuild_core.search.pareto import non_dominated

    dirs = [o["direction"] for o in objs]
    fig = _figure(6.5, 4.4)
    ax = fig.subplots()
    colors = {"pruned": "#cc6633", "full": "#4477aa"}
    tables = []
    for which, s in d.searches.items():
        c = colors.get(which)
        pts = np.array([h["values"] for h in s.get("history") or [] if h.get("values") and len(h["values"]) == 2], dtype=float)
        if len(pts) == 0:
            continue
        ax.scatter(pts[:, 0], pts[:, 1], s=12, alpha=0.3, color=c, label=f"{which}: evaluated")
        front = pts[non_dominated(pts, dirs)]
        front = front[np.argsort(front[:, 0])]
        # the staircase bounds the region the front dominates; its corners depend on the first direction
        ax.plot(front[:, 0], front[:, 1], marker="o", color=c, linewidth=2, label=f"{which}: Pareto front ({len(front)})",
                drawstyle="steps-pre" if dirs[0] == "maximize" else "steps-post")
        recs = sorted(s.get("pareto") or [], key=lambda r: r["values"][0] if r.get("values") else 0)
        tables.append(f"<div><h3>{_e(which)} space</h3>"
                      + _table([objs[0]["expr"], objs[1]["expr"], "architecture"],
                               [(r["values"][0], r["values"][1], _json(r.get("arch"))) for r in recs if r.get("values")], [True, True, False])
                      + "</div>")
    if not tables:
        return _note("The searches recorded no two-objective evaluations.")
    ax.set_xlabel(f"{objs[0]['expr']} ({dirs[0]})")
    ax.set_ylabel(f"{objs[1]['expr']} ({dirs[1]})")
    ax.set_title("Pareto front")
    ax.legend(fontsize=8)
    return _img(fig, "Pareto front") + '<div class="grid">' + "".join(tables) + "</div>"


SECTIONS = (
    Section("overview", "Run overview", _overview),
    Section("calibration", "Training-protocol calibration", _calibration),
    Section("effects", "Feature-value effects (model estimate)", _effects),
    Section("importance", "FE-MLP scalars (paper read-out; not an effect estimate)", _importance),
    Section("units", "Top unit configurations", _unit_configs),
    Section("hops", "Per-hop Spearman", _hop_spearman),
    Section("training", "Ranker training curves", _training),
    Section("architecture", "Built architecture", _architecture),
    Section("search", "Search trajectory", _search),
    Section("rounds", "Search rounds: what the ranker learned", _rounds),
    Section("pareto", "Pareto front", _pareto),
)


def render_report(run_dir: str | os.PathLike) -> str:
    """The report as one HTML string (see :func:`write_report`)."""
    d = load_run(run_dir)
    title = f"AutoBuild report: {d.summary.get('name') or d.config.get('name') or d.run_dir.name}"
    subtitle = f"space {d.space_name or 'unknown'} · target {d.summary.get('target') or d.config.get('target') or 'unknown'} · status {d.summary.get('status', 'unknown')}"
    body = []
    for sec in SECTIONS:
        try:
            content = sec.render(d)
        except Exception as exc:  # one broken piece must not cost the rest of the report
            content = f'<p class="error">This section could not be rendered: {_e(type(exc).__name__)}: {_e(exc)}</p>'
        body.append(f'<section id="{sec.id}"><h2>{_e(sec.title)}</h2>{content}</section>')
    nav = "".join(f'<a href="#{s.id}">{_e(s.title)}</a>' for s in SECTIONS)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header><nav>{nav}</nav><main>{''.join(body)}</main>"
            f"<footer>Written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))} from {_e(d.run_dir)} by tasks.report.</footer>"
            "</body></html>\n")


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the self-contained HTML report of ``run_dir`` (default ``<run_dir>/report.html``).

    Written to a temporary name and renamed, so a report being refreshed is never seen half-written
    (the MLflow upload and a user's browser may read it at any time)."""
    rd = Path(run_dir)
    if not rd.is_dir():
        from search_spaces.errors import ConfigError

        raise ConfigError(f"{str(rd)!r} is not a run directory (no such directory).")
    path = Path(out) if out is not None else rd / "report.html"
    text = render_report(rd)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
