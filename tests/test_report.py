"""The HTML report, on a real (small) run directory, checked as text and in a headless browser.

Running the whole pipeline takes minutes (tests/test_pipeline.py does that); here the core
functions build a NAS-Bench-201 run directory in a few seconds, written through the same
RunLayout the pipeline's tasks use: a ranker trained on a sample of the shared table, its unit
scores and read-outs, the built architecture, a two-objective search, and the summary.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
INJECTED = '<script>alert("pwned")</script>'
SECTION_TITLES = ("Run overview", "Training-protocol calibration", "Feature-value effects (model estimate)", "FE-MLP scalars (paper read-out; not an effect estimate)",
                  "Top unit configurations", "Per-hop Spearman",
                  "Ranker training curves", "Built architecture", "Search trajectory", "Search rounds: what the ranker learned", "Pareto front")
OBJECTIVES = [{"expr": "cifar10_test_acc", "direction": "maximize"}, {"expr": "latency_pixel3", "direction": "minimize"}]


def _nb201_table(shared_dir: Path) -> dict:
    acc = pd.read_csv(shared_dir / "data" / "nb201" / "nb201_cifar10.csv")
    lat = pd.read_csv(shared_dir / "data" / "nb201" / "nb201_latency_ms.csv", usecols=["index", "pixel3"])
    df = acc.merge(lat, on="index")
    return {a: {"cifar10_test_acc": float(x), "latency_pixel3": float(t)} for a, x, t in zip(df["arch"], df["cifar10_test_acc"], df["pixel3"])}


def _search_json(space, which: str, result, domain_size) -> dict:
    def rec(r):
        return {"arch": space.format(r["arch"]), "values": None if r["values"] is None else list(r["values"]),
                "n_eval": r["n_eval"], "source": r.get("source")}

    return {"which": which, "method": result.method, "study_name": None, "n_eval": result.n_eval,
            "history": [rec(r) for r in result.history], "best": None if result.best is None else rec(result.best),
            "pareto": [rec(r) for r in result.pareto], "seconds": 0.1, "domain_size": domain_size,
            "trajectory": [None if np.isnan(v) else v for v in result.best_trajectory()]}


def make_run_dir(rd: Path, table: dict, n_seeds: int = 120, epochs: int = 8, budget: int = 16) -> Path:
    """A completed NB-201 run directory (accuracy vs Pixel-3 latency) in the pipeline's layout."""
    from autobuild_core.build import build_arch, prune_space
    from autobuild_core.importance import fe_mlp_readout, op_effects
    from autobuild_core.ranker import RankerConfig
    from autobuild_core.scoring import score_units
    from autobuild_core.search import run_search
    from autobuild_core.train import TrainConfig, train_ranker
    from search_spaces import get_space

    space = get_space("nb201")
    rng = np.random.default_rng(0)
    strings = sorted(table)
    seeds = [strings[i] for i in rng.choice(len(strings), n_seeds, replace=False)]
    archs = [space.parse(s) for s in seeds]
    y = np.array([table[s]["cifar10_test_acc"] for s in seeds])
    trained = train_ranker(space, archs, y, ranker=RankerConfig(hidden=16, layers=3),
                           train=TrainConfig(epochs=epochs, batch_size=32, lr=2e-3, val_fraction=0.2, seed=0))
    from tasks.layout import RunLayout, write_stage

    layout = RunLayout(rd).create()
    stage = layout.stage("ranker", "k0")
    trained.save(stage / "ranker")
    last = [h for h in trained.history if h.get("val_pred_spearman") is not None][-1]
    info = {"pred_spearman": last["val_pred_spearman"], "hop_spearman": last["val_hop_spearman"], "spearman_on": "validation",
            "n_train": len(archs), "target_range": [float(y.min()), float(y.max())], "seconds": 1.0, "history": trained.history}
    write_stage(stage, {"info.json": json.loads(json.dumps(info, default=float)), "ranker": lambda d: trained.save(d)})
    scores = score_units(trained, space)
    imp = fe_mlp_readout(trained, space)
    effects = op_effects(trained, space, n_context=256)
    sdir = write_stage(layout.stage("scores", stage.name), {"unit_scores.csv": lambda p: scores.to_csv(p, index=False),
                                                            "importance.csv": lambda p: imp.to_csv(p, index=False),
                                                            "op_effects.csv": lambda p: effects.to_csv(p, index=False)})

    built = space.format(build_arch(space, scores, imp))
    pruned = prune_space(space, scores, k=2, importance=imp)
    built_values = [table[built]["cifar10_test_acc"], table[built]["latency_pixel3"]]
    layout.built.write_text(json.dumps({"built": [{"arch": built, "values": built_values}], "pruned": json.loads(pruned.to_json())}))

    def objective(batch):
        return [(table[space.format(a)]["cifar10_test_acc"], table[space.format(a)]["latency_pixel3"]) for a in batch]

    directions = tuple(o["direction"] for o in OBJECTIVES)
    res = run_search("random", space, objective, budget=budget, seed=0, directions=directions)
    layout.search_json("run").write_text(json.dumps(_search_json(space, "run", res, space.size())))

    best = max(seeds, key=lambda s: table[s]["cifar10_test_acc"])
    config = {"name": "report-test", "space": "nb201", "target": "cifar10_test_acc",
              "evaluator": {"kind": "nb201_table", "settings": {"path": "nb201_cifar10.csv"}},
              "search": {"method": "random", "budget": budget, "objectives": OBJECTIVES}}
    (rd / "config.json").write_text(json.dumps(config))
    summary = {
        "status": "completed", "name": f"report-test {INJECTED}", "space": "nb201",
        "evaluator": {"kind": "nb201_table", "settings": {"path": f"x{INJECTED}.csv"}}, "target": "cifar10_test_acc",
        "run_dir": str(rd), "mlflow_run_id": "abc123", "prefect_flow_run_id": None,
        "evaluations": {"total": n_seeds + 2 * budget, "new": n_seeds + 2 * budget, "reused": 0, "failed": 0},
        "stages": {"ranker": layout.relative(stage), "scores": layout.relative(sdir)},
        "ranker": {"heldout_spearman": info["pred_spearman"], "hop_spearman": info["hop_spearman"], "spearman_on": "validation",
                   "n_train": n_seeds, "path": str(stage / "ranker")},
        "built": [{"arch": built, "values": built_values}],
        "pruned": {"size": pruned.size, "k": 2},
        "winners": [{"rank": 1, "arch": best, "metrics": table[best], "target": table[best]["cifar10_test_acc"], "error": None}],
        "best": {"arch": best, "metrics": table[best], "target": table[best]["cifar10_test_acc"], "source": "winners"},
        "stage_seconds": {"sample": 0.1, "evaluate": 2.0, "train_ranker": 3.0, "score": 0.5, "build_prune": 0.2, "search": 4.0,
                          "winners": 0.1, "total": 9.9},
    }
    (rd / "summary.json").write_text(json.dumps(summary))
    return rd


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shared_dir) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("report") / "run", _nb201_table(shared_dir))


@pytest.fixture(scope="module")
def report(run_dir) -> tuple[Path, str]:
    from tasks.report import write_report

    path = write_report(run_dir)
    return path, path.read_text(encoding="utf-8")


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_has_every_section_and_embedded_images(report, run_dir):
    path, text = report
    assert path == run_dir / "report.html"
    for title in SECTION_TITLES:
        assert f">{title}</h2>" in text, title
    assert 'class="error"' not in text, re.findall(r'class="error">[^<]*', text)
    assert 'class="note"' not in text.split('id="search"')[0], "a complete run must not need notes before the search"
    imgs = _images(text)
    # stage times, effects, FE-MLP, unit scores, hops, training, architecture, search, Pareto
    assert len(imgs) >= 9 and len(imgs) == text.count("<img ")
    assert all(b.startswith(b"\x89PNG\r\n\x1a\n") and len(b) > 2000 for b in imgs)
    # numbers a reader looks for
    assert "node1" in text and "node3" in text and "nor_conv" in text
    assert "15,625" in text  # full space size in the search table
    assert "op_effects.csv of the scoring stage" in text and "not an effect estimate" in text
    assert ">importance<" not in text.lower() and "importance</" not in text.lower()  # nothing labelled "importance"


def test_report_is_self_contained(report):
    _, text = report
    lower = text.lower()
    assert "http://" not in lower and "https://" not in lower and "file:" not in lower
    assert "<script" not in lower and "<link" not in lower and "@import" not in lower and "url(" not in lower
    srcs = re.findall(r'\ssrc="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    hrefs = re.findall(r'\shref="([^"]*)"', text)
    assert hrefs and all(h.startswith("#") for h in hrefs)  # only the in-page navigation


def test_injected_text_is_escaped(report):
    _, text = report
    assert INJECTED not in text
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in text


def test_missing_pieces_give_notes_not_failures(run_dir, tmp_path):
    """A run without search files or the read-out CSVs still reports: both read-outs are recomputed
    from the saved ranker; the search and Pareto sections say there was no search."""
    from tasks.report import write_report

    rd = tmp_path / "partial"
    shutil.copytree(run_dir, rd, ignore=shutil.ignore_patterns("report.html"))
    for p in rd.glob("search_*.json"):
        p.unlink()
    sdir = next((rd / "stages").glob("scores-*"))
    (sdir / "importance.csv").unlink()
    (sdir / "op_effects.csv").unlink()
    text = write_report(rd, out=tmp_path / "partial.html").read_text()
    assert 'class="error"' not in text
    assert "recomputed from the saved ranker" in text and "interval covers the sampled architectures only" in text
    assert "No search in this run" in text and "there is no Pareto front" in text
    assert not (rd / "report.html").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    text = write_report(empty).read_text()
    assert 'class="error"' not in text
    assert "summary.json is missing" in text and "No unit scores" in text and "No built architecture" in text
    for title in SECTION_TITLES:
        assert f">{title}</h2>" in text


def test_cli_report_command(run_dir, tmp_path, capsys):
    from autobuild_cli.main import main

    rd = tmp_path / "cli"
    shutil.copytree(run_dir, rd, ignore=shutil.ignore_patterns("report.html"))
    assert main(["report", str(rd)]) == 0
    assert (rd / "report.html").is_file() and str(rd / "report.html") in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 2  # one-paragraph user error, no traceback


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.timeout(180)
def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; `make system-packages` does it)")
    path, _ = report
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,4000", path.resolve().as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot (exit {r.returncode}): {r.stderr[-2000:]}"
    assert shot.stat().st_size > 50_000
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape[:2] == (4000, 1280)
    assert img.std() > 20, "the screenshot is (nearly) one flat colour"
    # The page's own header colour and the bar colour inside the embedded PNGs both show up:
    # the CSS applied and the base64 images decoded.
    def near(rgb, tol=12):
        return int((np.abs(img - np.array(rgb)).max(axis=2) <= tol).sum())

    assert near((0x23, 0x32, 0x47)) > 20_000, "header background missing: CSS not applied?"
    assert near((0x44, 0x77, 0xAA)) > 5_000, "plot bars missing: embedded images not rendered?"
    shutil.copy(shot, path.parent / "report_screenshot.png")  # left beside the report for a human look


DECIMALS_5 = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?![\w])")  # a number printed with more than 4 decimals


def _visible_text(html_text: str) -> str:
    """The report without its CSS and embedded images: what a reader sees."""
    return re.sub(r"<style>.*?</style>|src=\"data:[^\"]*\"", "", html_text, flags=re.S)


def test_report_numbers_are_rounded_and_trust_is_stated(report, run_dir):
    from tasks.report import LOW_SPEARMAN, load_run

    _, text = report
    assert not DECIMALS_5.findall(_visible_text(text)), DECIMALS_5.findall(_visible_text(text))[:5]
    d = load_run(run_dir)
    lo, hi = d.target_range()
    # unit scores in "target units" never leave the measured range; the raw CSV keeps what the ranker said
    assert d.scores["score"].between(lo, hi).all()
    assert f"{d.n_clipped:,} of {len(d.scores):,} lay outside it" in text
    # the ranker's held-out Spearman sits beside each read-out that depends on it
    sp, on = d.ranker_spearman()
    for sec in ("effects", "importance", "units", "architecture"):
        part = text.split(f'<section id="{sec}">')[1].split("</section>")[0]
        assert "Spearman" in part and ('class="trust"' in part or 'class="warn"' in part), sec
    assert ('class="warn">Low trust' in text) == (sp < LOW_SPEARMAN or any(h < LOW_SPEARMAN for h in d.hop_spearman()))


def test_low_spearman_is_a_visible_warning(run_dir, tmp_path):
    from tasks.report import LOW_SPEARMAN, write_report

    rd = tmp_path / "low"
    shutil.copytree(run_dir, rd, ignore=shutil.ignore_patterns("report.html"))
    s = json.loads((rd / "summary.json").read_text())
    s["ranker"]["heldout_spearman"] = LOW_SPEARMAN - 0.56
    (rd / "summary.json").write_text(json.dumps(s))
    text = write_report(rd).read_text()
    part = text.split('<section id="effects">')[1].split("</section>")[0]
    assert 'class="warn">Low trust' in part and "-0.26" in part
