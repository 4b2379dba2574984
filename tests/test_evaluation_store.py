"""The evaluation store and loop: durability, reuse, retries, crash recovery, concurrent writers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from evaluation_fakes import FakeEvaluator, FakeSpace, true_acc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces.errors import CheckpointError, ConfigError
from evaluators import EvalRecord, EvaluationError, EvaluationStore, evaluate_archs

HERE = Path(__file__).resolve().parent
WORKER = HERE / "evaluation_fakes.py"
ROOT = HERE.parent


def _rec(key="k1", status="ok", transient=False, acc=1.0, seed=0):
    return EvalRecord("fake", key, 1, "fp", seed, status, {"acc": acc} if status == "ok" else {},
                      None if status == "ok" else "why", 0.1, 1, transient)


def test_put_first_write_wins_and_transient_is_replaced(tmp_path):
    st = EvaluationStore(tmp_path / "e.sqlite")
    assert st.put(_rec(acc=1.0))
    assert not st.put(_rec(acc=2.0))
    assert st.get("fake", "k1", "fp", 0).metrics == {"acc": 1.0}
    assert st.get("fake", "k1", "fp", 1) is None
    # a transient failure is a placeholder: the next definitive record replaces it, exactly once
    assert st.put(_rec("k2", "failed", transient=True))
    assert st.put(_rec("k2", acc=3.0))
    assert not st.put(_rec("k2", acc=4.0))
    r = st.get("fake", "k2", "fp", 0)
    assert r.ok and r.metrics == {"acc": 3.0} and r.attempts == 2
    # a definitive failure is never replaced
    assert st.put(_rec("k3", "failed"))
    assert not st.put(_rec("k3", acc=5.0))
    assert len(st) == 3 and st.count(status="failed") == 1
    assert set(st.get_many("fake", ["k1", "k2", "nope"], "fp", 0)) == {"k1", "k2"}
    assert [r.key for r in st.records(space="fake", status="ok")] == ["k1", "k2"]
    assert st.fingerprints() == ["fp"]
    st.check()
    # WAL mode on the file
    assert sqlite3.connect(tmp_path / "e.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["ok", "failed", "transient"]),
                          st.integers(0, 9)), max_size=12))
def test_put_semantics_match_model(tmp_path_factory, ops):
    """First definitive record wins; a transient placeholder is replaced by the next write."""
    store = EvaluationStore(tmp_path_factory.mktemp("m") / "e.sqlite")
    model = {}
    for key, kind, v in ops:
        rec = _rec(key, "failed" if kind != "ok" else "ok", transient=kind == "transient", acc=float(v))
        writable = key not in model or (model[key].status == "failed" and model[key].transient)
        assert store.put(rec) == writable
        if writable:
            model[key] = rec
    got = {r.key: r for r in store.records()}
    assert set(got) == set(model)
    for k, r in model.items():
        assert (got[k].status, got[k].transient, got[k].metrics) == (r.status, r.transient, r.metrics)
    store.close()


def test_export_formats(tmp_path):
    st = EvaluationStore(tmp_path / "e.sqlite")
    st.put(_rec("a", acc=1.5))
    st.put(_rec("b", "failed"))
    df = pd.read_parquet(st.export(tmp_path / "x.parquet"))
    assert list(df["key"]) == ["a", "b"] and df.loc[0, "acc"] == 1.5
    assert list(pd.read_csv(st.export(tmp_path / "x.csv"))["status"]) == ["ok", "failed"]
    lines = [json.loads(s) for s in open(st.export(tmp_path / "x.jsonl"))]
    assert lines[0]["metrics"] == {"acc": 1.5} and lines[1]["error"] == "why"
    with pytest.raises(ConfigError):
        st.export(tmp_path / "x.xlsx")


def test_corrupted_store_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CheckpointError) as e:
        EvaluationStore(bad)
    assert str(bad) in str(e.value) and "move it aside" in str(e.value)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE evaluations (x INTEGER)")
    with pytest.raises(CheckpointError, match="not an evaluation store"):
        EvaluationStore(other)


def test_reuse_on_rerun_counts_real_evaluations(tmp_path):
    st, sp = EvaluationStore(tmp_path / "e.sqlite"), FakeSpace()
    archs = [5, 1, 7, 1, 1005, 3]  # 1 repeated, 1005 shares 5's key
    ev = FakeEvaluator()
    out = evaluate_archs(ev, sp, archs, st, progress=False)
    assert (out.new, out.reused, out.failed) == (4, 0, 0)
    assert sorted(n for n, _ in ev.calls) == [1, 3, 5, 7]
    assert [r.key for r in out.records] == ["k5", "k1", "k7", "k1", "k5", "k3"]  # input order kept
    ev2 = FakeEvaluator()
    out2 = evaluate_archs(ev2, sp, archs + [9], st, progress=True)
    assert ev2.calls == [(9, 0)] and (out2.new, out2.reused) == (1, 4)
    # a different seed is a different record
    ev3 = FakeEvaluator()
    evaluate_archs(ev3, sp, [1], st, seed=1, progress=False)
    assert ev3.calls == [(1, 1)]
    archs_l, y = out2.labels("acc")
    assert archs_l == [5, 1, 7, 3, 9] and y[0] == true_acc(5)
    _, y2 = out2.labels("acc + 2*lat")
    assert y2[0] == pytest.approx(true_acc(5) + 12)
    assert len(out2.labels("acc", unique=False)[1]) == 7


def test_retries_failures_and_labels_only_ok(tmp_path):
    st, sp = EvaluationStore(tmp_path / "e.sqlite"), FakeSpace()
    ev = FakeEvaluator(fail={2}, nan={3}, transient={4: 2, 6: 5})
    out = evaluate_archs(ev, sp, [1, 2, 3, 4, 6], st, retries=2, progress=False)
    by = {r.key: r for r in out.records}
    assert by["k4"].ok and by["k4"].attempts == 3
    assert by["k6"].status == "failed" and by["k6"].transient and by["k6"].attempts == 3
    assert out.failed == 3 and st.count(status="failed") == 3
    assert "diverged" in st.get("fake", "k2", ev.fingerprint()).error
    archs, y = out.labels("acc")
    assert archs == [1, 4] and len(y) == 2
    # rerun: definitive failures are reused, the transient one is tried again and now succeeds
    ev2 = FakeEvaluator(fail={2}, nan={3})
    out2 = evaluate_archs(ev2, sp, [1, 2, 3, 4, 6], st, progress=False)
    assert ev2.calls == [(6, 0)] and out2.failed == 2
    assert st.get("fake", "k6", ev.fingerprint()).ok
    with pytest.raises(ConfigError, match="not in the evaluation records"):
        out2.labels("accuracy")


def test_max_failure_fraction_stops_early_and_keeps_records(tmp_path):
    st, sp = EvaluationStore(tmp_path / "e.sqlite"), FakeSpace()
    ev = FakeEvaluator(fail=set(range(10)), batch_size=2)
    with pytest.raises(EvaluationError) as e:
        evaluate_archs(ev, sp, list(range(20)), st, max_failure_fraction=0.1, progress=False)
    assert "max_failure_fraction" in str(e.value) and "diverged" in str(e.value)
    assert len(ev.calls) == 4 and len(st) == 4  # 3 > 0.1 * 20 after the second batch
    assert e.value.outcome.failed == 4
    out = evaluate_archs(FakeEvaluator(fail=set(range(10))), sp, list(range(20)), st, max_failure_fraction=0.6, progress=False)
    assert out.failed == 10 and out.reused == 4


def _run_worker(store, log, delay, archs):
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{ROOT}")
    return subprocess.Popen([sys.executable, str(WORKER), str(store), str(log), str(delay), json.dumps(archs)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _logged(log):
    return [int(line.split()[0]) for line in open(log)] if Path(log).exists() else []


def test_sigkill_mid_run_then_resume(tmp_path):
    store, log = tmp_path / "e.sqlite", tmp_path / "log1"
    archs = list(range(30))
    p = _run_worker(store, log, 0.1, archs)
    deadline = time.time() + 60
    while time.time() < deadline and len(_logged(log)) < 5 and p.poll() is None:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, p.stderr.read()
    st = EvaluationStore(store)
    st.check()
    stored = {r.arch for r in st.records()}
    assert 3 <= len(stored) < 30
    ev = FakeEvaluator()
    out = evaluate_archs(ev, FakeSpace(), archs, st, progress=False)
    redone = {n for n, _ in ev.calls}
    assert not redone & stored, "a stored record was evaluated again"
    assert redone | stored == set(archs) and out.reused == len(stored)
    assert len(st) == 30 and all(r.ok for r in st.records())


def test_four_processes_write_concurrently(tmp_path):
    store = tmp_path / "e.sqlite"
    EvaluationStore(store).close()
    archs = list(range(40))
    procs = [_run_worker(store, tmp_path / f"log{i}", 0.0, archs[i * 5:] + archs[:i * 5]) for i in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    st = EvaluationStore(store)
    rows = sqlite3.connect(store).execute("SELECT key, COUNT(*) FROM evaluations GROUP BY key, fingerprint, seed").fetchall()
    assert len(rows) == 40 and all(c == 1 for _, c in rows)
    recs = st.records()
    assert sorted(r.arch for r in recs) == archs
    assert all(r.ok and r.metrics["acc"] == true_acc(r.arch) for r in recs)
