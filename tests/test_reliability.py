"""Reliability checks that need no subprocess: the pipeline's failure-fraction rule, the preflight
of a run's inputs, and a static scan for unsafe deserialisation or dynamic code anywhere in the
project's own code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tasks.config import load_config
from search_spaces.errors import AutoBuildError, CheckpointError, ConfigError, ExpressionError, UnknownNameError
from evaluators import EvaluationError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def nb201_half_table(tmp_path):
    """20 distinct NB-201 cells; the table labels only the first 10, so the rest fail 'not in table'."""
    from search_spaces import get_space

    sp = get_space("nb201")
    natives = list(dict.fromkeys(sp.format(a) for a in sp.sample(40, seed=3)))[:20]
    assert len(natives) == 20
    path = tmp_path / "half.csv"
    path.write_text("index,arch,cifar10_test_acc\n" + "".join(f"{i},{a},{50 + i}\n" for i, a in enumerate(natives[:10])))
    return natives, path


def _cfg(path, fraction: float):
    return load_config(None, ["space=nb201", "target=cifar10_test_acc", "evaluator.kind=nb201_table", f"evaluator.settings.path={path}",
                              f"failure.max_failure_fraction={fraction}", "tracking.enabled=false", "failure.retries=0"])


def test_pipeline_fails_only_past_failure_fraction_naming_archs_and_reasons(tmp_path, nb201_half_table):
    from flows.evaluate import Evaluations
    from search_spaces import get_space
    from tasks.layout import RunLayout

    natives, path = nb201_half_table
    space = get_space("nb201")
    archs = [space.parse(a) for a in natives]
    evals = Evaluations(_cfg(path, 0.6), RunLayout(tmp_path / "run").create(), space)
    recs = evals(archs, subflow=False)
    assert [r.ok for r in recs] == [True] * 10 + [False] * 10
    assert all("not in table" in r.error for r in recs[10:])
    assert evals.counts() == {"total": 20, "new": 20, "reused": 0, "failed": 10}
    evals.check_failures("seed evaluation")  # 50% failed, 60% allowed: the run continues

    strict = Evaluations(_cfg(path, 0.2), RunLayout(tmp_path / "run"), space)
    strict(archs, subflow=False)
    assert strict.counts()["reused"] == 20 and strict.counts()["new"] == 0  # failures are stored and reused, not redone
    with pytest.raises(EvaluationError) as e:
        strict.check_failures("seed evaluation")
    msg = str(e.value)
    assert "10 of 20" in msg and "failure.max_failure_fraction=0.2" in msg and "not in table" in msg
    assert natives[10] in msg  # names which architecture failed, and why
    assert "rerun with the same --out" in msg


def test_preflight_catches_each_mistake_before_anything_is_written(tmp_path, nb201_half_table):
    from tasks.preflight import preflight

    _, path = nb201_half_table
    base = ["space=nb201", "evaluator.kind=nb201_table", f"evaluator.settings.path={path}", "target=cifar10_test_acc", "seeds.n=20"]
    run = tmp_path / "never-created"
    preflight(load_config(None, base), run)  # the good config passes
    cases = [
        (["space=nb202"], UnknownNameError, "space: "),
        (["evaluator.kind=nb201_tabel"], UnknownNameError, "evaluator.kind: "),
        (["target=cifar10_test_acc + lat"], ExpressionError, "target: "),
        (["target=cifar10_test_acc if 1 else 0"], ExpressionError, "target: "),
        (["search.objectives=[{expr: 'accuracy'}]"], ExpressionError, "search.objectives[0].expr: "),
        (["winners.evaluator_settings={path: missing.csv}"], AutoBuildError, "winners.evaluator_settings: "),
        (["seeds.n=8"], ConfigError, "seeds.n=8"),
        (["seeds.n=14", "train.val_fraction=0.5"], ConfigError, "seeds.n to 16 or more"),
    ]
    for extra, exc, prefix in cases:
        with pytest.raises(exc) as e:
            preflight(load_config(None, base + extra), run)
        assert str(e.value).startswith(prefix) or prefix in str(e.value), (extra, str(e.value))
    assert not run.exists()


def test_preflight_names_damaged_run_dir_files_and_changes_nothing(tmp_path, nb201_half_table):
    from tasks.preflight import preflight

    _, path = nb201_half_table
    cfg = load_config(None, ["space=nb201", "evaluator.kind=nb201_table", f"evaluator.settings.path={path}", "target=cifar10_test_acc", "seeds.n=20"])
    run = tmp_path / "run"
    stage = run / "stages" / "search-pruned-00ff"
    stage.mkdir(parents=True)
    (stage / "search.json").write_text("{not json")
    (stage / "done.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"search\.json is corrupted.*Delete .*search-pruned-00ff"):
        preflight(cfg, run)
    (stage / "done.json").unlink()  # an unfinished stage is recomputed anyway: not an error
    preflight(cfg, run)
    (run / "evaluations.sqlite").write_bytes(b"\x00" * 2048)
    with pytest.raises(CheckpointError, match="not a readable evaluation store"):
        preflight(cfg, run)
    assert (run / "evaluations.sqlite").read_bytes() == b"\x00" * 2048


# ---- safe files: a static scan of our own code ------------------------------------------------------

_OWN = ["autobuild_core", "autobuild_cli", "search_spaces", "flows", "tasks", "benchmarks"]


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(func) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def test_no_unsafe_deserialisation_or_dynamic_code():
    """Nothing unpickles by default: no pickle.load(s), no torch.load without weights_only=True, no
    yaml.load/unsafe_load, no eval/exec. The authors' caches and CIFAR-10 batches go through
    restricted Unpickler subclasses (``SomeUnpickler(f).load()``), which this scan allows."""
    bad = []
    files = [p for d in _OWN for p in (REPO / d).rglob("*.py")]
    assert len(files) > 20
    for f in files:
        for call in _calls(f):
            name = _dotted(call.func)
            where = f"{f.relative_to(REPO)}:{call.lineno} {name}"
            if name in ("eval", "exec") and not isinstance(call.func, ast.Name):
                continue  # a method such as model.eval()
            if name in ("eval", "exec", "pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "marshal.loads",
                        "dill.load", "joblib.load", "cloudpickle.load"):
                bad.append(where)
            if name in ("numpy.load", "np.load") and any(k.arg == "allow_pickle" and getattr(k.value, "value", None) is not False
                                                        for k in call.keywords):
                bad.append(where)  # numpy refuses pickles unless allow_pickle is passed
            if name == "torch.load" and not any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in call.keywords):
                bad.append(where)
    assert not bad, f"unsafe deserialisation or dynamic code: {bad}"
