"""Bad input tried as a new user would: the real `autobuild` command in a subprocess.

Each case must exit with status 2, print exactly one paragraph (one line, starting
``autobuild: error:``) that names what to fix, print no traceback (``--debug`` shows one), and
leave every file already in the run directory byte-for-byte and mtime-for-mtime as it was, with
nothing added. All cases are caught before the Prefect server starts; they run through the real
``main`` in one batch process (tests/cli_batch.py), so the module pays one interpreter start-up,
and the ``--debug`` cases run as `autobuild` processes of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AUTOBUILD = [sys.executable, "-m", "autobuild_cli.main"]

# Two NB-201 cells in the official string form (any valid cells will do: the table is ours).
CELL_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
CELL_B = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
NB201 = ["run", "-c", "configs/nb201_cifar10.yaml"]
QUICK = ["run", "-c", "configs/quickstart.yaml"]


@dataclass
class Case:
    """One bad input: CLI arguments (``{tmp}`` and ``{out}`` are filled in), files to create
    first, and fragments the one-paragraph message must contain."""

    args: list[str]
    needles: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    debug: bool = False  # also run with --debug and expect the traceback


def _ranker_stage(out: str) -> dict[str, str | bytes]:
    stage = f"{out}/stages/ranker-0123456789abcdef"
    meta = {"format_version": 1, "space": "nasbench_graph", "features": [], "ranker_config": {}, "train_config": {}}
    return {f"{stage}/done.json": "{}", f"{stage}/info.json": json.dumps({"pred_spearman": 0.5}),
            f"{stage}/ranker/ranker.json": json.dumps(meta), f"{stage}/ranker/ranker.safetensors": b"\x00garbage, not safetensors"}


CASES: dict[str, Case] = {
    # config files and values
    "config_key_typo": Case(["run", "-c", "{tmp}/typo.yaml"], ["'budgte'", "did you mean 'budget'", "search"],
                            {"{tmp}/typo.yaml": "space: nasbench_graph\nsearch:\n  budgte: 10\n"}, debug=True),
    "corrupted_yaml": Case(["run", "-c", "{tmp}/broken.yaml"], ["not valid YAML", "line 3", "Fix the syntax"],
                           {"{tmp}/broken.yaml": "space: nasbench_graph\nseeds: [n: 10\ntrain: {epochs: 2}\n"}),
    "config_not_utf8": Case(["run", "-c", "{tmp}/binary.yaml"], ["not UTF-8"], {"{tmp}/binary.yaml": b"\xff\xfe\x00garbage"}),
    "missing_config_file": Case(["run", "-c", "{tmp}/nope.yaml"], ["does not exist", "nope.yaml"]),
    "wrong_value_type": Case([*QUICK, "--set", "seeds.n=many"], ["seeds.n", "valid integer", "'many'"]),
    "out_of_range_value": Case([*QUICK, "--set", "failure.max_failure_fraction=1.5"], ["failure.max_failure_fraction", "1"]),
    "store_path_escapes_run_dir": Case([*QUICK, "--set", "evaluator.store=../../elsewhere.sqlite"], ["evaluator.store", "inside the run directory"]),
    # names
    "unknown_space": Case([*QUICK, "--set", "space=nasbench_grap"], ["space:", "'nasbench_grap'", "Did you mean 'nasbench_graph'"]),
    "unknown_evaluator": Case([*QUICK, "--set", "evaluator.kind=nasbench_grph"], ["evaluator.kind", "Did you mean 'nasbench_graph'"]),
    "unknown_dataset": Case([*QUICK, "--set", "evaluator.settings.dataset=coraa"], ["evaluator.settings", "'coraa'", "Did you mean 'cora'"]),
    "unknown_metric_in_target": Case([*QUICK, "--set", "target=accuracy"], ["target:", "accuracy", "Did you mean 'acc'"]),
    "unknown_metric_in_objective": Case([*QUICK, "--set", "search.objectives=[{expr: latency_mss, direction: minimize}]"],
                                        ["search.objectives[0].expr", "Did you mean 'latency_ms'"]),
    # target expressions
    "target_attribute_access": Case([*QUICK, "--set", "target=acc.__class__"], ["target:", "Attribute is not allowed"]),
    "target_forbidden_call": Case([*QUICK, "--set", "target=__import__('os')"], ["target:", "'__import__' is not allowed"]),
    "target_syntax": Case([*QUICK, "--set", "target=acc +"], ["target:", "not a valid expression"]),
    # tables
    "wrong_table_path": Case([*NB201, "--set", "evaluator.settings.path={tmp}/no_such_table.csv"],
                             ["evaluator.settings", "no_such_table.csv", "does not exist", "Check the path"]),
    "garbage_arch_in_table": Case([*NB201, "--set", "evaluator.settings.path={tmp}/garbage.csv"],
                                  ["garbage.csv", "line 3", "'arch'", "Fix or delete the row"],
                                  {"{tmp}/garbage.csv": f"index,arch,cifar10_test_acc\n0,{CELL_A},90.1\n1,conv3x3-relu-garbage,50\n"}, debug=True),
    "table_missing_metric_column": Case([*NB201, "--set", "evaluator.settings.path={tmp}/nometric.csv"],
                                        ["nometric.csv"], {"{tmp}/nometric.csv": f"index,arch\n0,{CELL_A}\n1,{CELL_B}\n"}),
    "table_nan_metric": Case([*NB201, "--set", "evaluator.settings.path={tmp}/nan.csv"], ["nan.csv", "line 3"],
                             {"{tmp}/nan.csv": f"index,arch,cifar10_test_acc\n0,{CELL_A},90.1\n1,{CELL_B},nan\n"}),
    "table_text_metric": Case([*NB201, "--set", "evaluator.settings.path={tmp}/text.csv"], ["text.csv", "line 2"],
                              {"{tmp}/text.csv": f"index,arch,cifar10_test_acc\n0,{CELL_A},high\n1,{CELL_B},80\n"}),
    "table_conflicting_duplicates": Case([*NB201, "--set", "evaluator.settings.path={tmp}/dup.csv"], ["dup.csv"],
                                         {"{tmp}/dup.csv": f"index,arch,cifar10_test_acc\n0,{CELL_A},90.1\n1,{CELL_A},70.0\n"}),
    # too few seeds
    "too_few_seeds": Case([*QUICK, "--set", "seeds.n=5"], ["seeds.n=5", "too few", "seeds.n to 9 or more"]),
    # damaged artefacts in the run directory being resumed
    "corrupted_store": Case([*QUICK], ["evaluations.sqlite", "not a readable evaluation store", "move it aside"],
                            {"{out}/evaluations.sqlite": b"SQLite format 3\x00" + b"\x13" * 4000}, debug=True),
    "corrupted_ranker_checkpoint": Case([*QUICK], ["ranker-0123456789abcdef", "corrupted", "Delete", "rerun"], {}),
    "corrupted_stage_json": Case([*QUICK], ["build.json", "corrupted", "Delete"],
                                 {"{out}/stages/build-0123456789abcdef/done.json": "{}",
                                  "{out}/stages/build-0123456789abcdef/build.json": '{"built": [{"link": [0, 1'}),
}
CASES["corrupted_ranker_checkpoint"].files = _ranker_stage("{out}")


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_HOME"] = str(tmp / "prefect-home")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


def _prepare(name: str, case: Case, root: Path) -> tuple[Path, list[str], dict]:
    """The case's run directory with a previous run's outputs (which a failed start must not
    touch) and its files; returns the directory, the full argv and the directory's snapshot."""
    tmp = root / name
    out = tmp / "run"
    out.mkdir(parents=True)
    (out / "summary.json").write_text('{"status": "completed", "note": "previous run"}')
    (out / "config.json").write_text('{"name": "previous"}')
    (out / "report.html").write_text("<html>previous</html>")
    for rel, content in case.files.items():
        p = Path(rel.replace("{tmp}", str(tmp)).replace("{out}", str(out)))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    args = [a.replace("{tmp}", str(tmp)).replace("{out}", str(out)) for a in case.args]
    return out, args + ([] if "--out" in args else ["--out", str(out)]), _snapshot(out)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case without --debug through the real ``main`` in one batch process (tests/cli_batch.py:
    one interpreter start-up for all), and the --debug cases as `autobuild` processes of their own
    beside it, so the uncaught-exception path is a real process exit."""
    root = tmp_path_factory.mktemp("badinput")
    prepared = {name: _prepare(name, case, root) for name, case in CASES.items()}
    batch = [{"argv": args, "env": _env(root / name), "cwd": str(REPO)} for name, (_, args, _) in prepared.items()]
    (root / "cases.json").write_text(json.dumps(batch))
    runner = subprocess.Popen([sys.executable, str(REPO / "tests" / "cli_batch.py"), str(root / "cases.json"), str(root / "results.json")],
                              cwd=REPO, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    debug = {name: subprocess.run(AUTOBUILD + ["--debug"] + prepared[name][1], cwd=REPO, env=_env(root / name), capture_output=True,
                                  text=True, timeout=120) for name, case in CASES.items() if case.debug}
    log, _ = runner.communicate(timeout=300)
    assert runner.returncode == 0, log[-3000:]
    plain = json.loads((root / "results.json").read_text())
    res = {}
    for (name, (out, args, before)), r in zip(prepared.items(), plain):
        res[name] = {"plain": subprocess.CompletedProcess(args, r["returncode"], r["stdout"], r["stderr"]),
                     "before": before, "after": _snapshot(out)}
        if name in debug:
            res[name]["debug"] = debug[name]
    return res


@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_paragraph_exit_2_and_writes_nothing(results, name):
    case, res = CASES[name], results[name]
    r = res["plain"]
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr
    assert err.startswith("autobuild: error:") and "\n" not in err, f"not one paragraph:\n{r.stderr}"
    assert r.stdout.strip() == "", r.stdout
    for needle in case.needles:
        assert needle in err, f"{needle!r} missing from: {err}"
    assert res["after"] == res["before"], "files in the run directory were changed or added"


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.debug])
def test_debug_shows_the_traceback(results, name):
    r = results[name]["debug"]
    assert r.returncode != 0 and "Traceback (most recent call last)" in r.stderr, r.stderr[-2000:]
