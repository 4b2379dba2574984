"""The evaluator contract: records, fingerprints, per-architecture failures, the registry."""

from __future__ import annotations

import math

import pytest
from evaluation_fakes import FakeEvaluator, FakeSpace
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces.errors import ConfigError, UnknownNameError
from evaluators import EvalRecord, Evaluator, get_evaluator, list_evaluators, register_evaluator
from evaluators.base import canonical_json, check_metrics


class Knob(Evaluator):
    name = "knob"

    def __init__(self, **s):
        self.s = s

    def settings(self):
        return self.s


def test_fingerprint_is_stable_and_sensitive():
    a, b = Knob(lr=0.1, epochs=3), Knob(epochs=3, lr=0.1)
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 16
    assert Knob(lr=0.2, epochs=3).fingerprint() != a.fingerprint()
    c = Knob(lr=0.1, epochs=3)
    c.version = "2"
    assert c.fingerprint() != a.fingerprint()


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(st.integers(), st.text(max_size=5), st.booleans()), max_size=5))
def test_fingerprint_ignores_key_order(d):
    rev = dict(reversed(list(d.items())))
    assert Knob(**d).fingerprint() == Knob(**rev).fingerprint()


def test_failures_are_records_never_exceptions():
    ev = FakeEvaluator(fail={3}, nan={4}, transient={5: 1})
    recs = ev.evaluate(FakeSpace(), [1, 3, 4, 5], seed=0)
    assert [r.status for r in recs] == ["ok", "failed", "failed", "failed"]
    assert recs[0].metrics["acc"] == pytest.approx(50.0 + 7919 % 100 / 10)
    assert "diverged" in recs[1].error and not recs[1].transient
    assert "acc" in recs[2].error and "not finite" in recs[2].error
    assert recs[3].transient and "transient" in recs[3].error
    assert all(r.space == "fake" and r.fingerprint == ev.fingerprint() for r in recs)
    assert recs[0].key == "k1" and recs[0].arch == 1


@pytest.mark.parametrize("bad,needle", [({}, "no metrics"), ({"a": "x"}, "not a number"), ({"a": True}, "bool"),
                                        ({"a": math.inf}, "not finite"), ([1.0], "instead of a dict")])
def test_check_metrics_reasons(bad, needle):
    clean, reason = check_metrics(bad)
    assert clean == {} and needle in reason


def test_record_roundtrip_and_status_check():
    r = EvalRecord("s", "k", {"a": [1, 2]}, "fp", 1, "ok", {"acc": 1.0})
    assert EvalRecord.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError):
        EvalRecord("s", "k", 1, "fp", status="weird")
    assert canonical_json({"b": 1, "a": [1]}) == '{"a":[1],"b":1}'


def test_registry():
    assert {"table", "nb201_table", "nasbench_graph", "train"} <= set(list_evaluators())
    with pytest.raises(UnknownNameError) as e:
        get_evaluator("tabel")
    assert "'table'" in str(e.value)
    register_evaluator("knob_test", "test_evaluation_base:Knob")
    ev = get_evaluator("knob_test", lr=1)
    assert ev.settings() == {"lr": 1}
    with pytest.raises(ConfigError):
        register_evaluator("broken", "no_colon")
    with pytest.raises(ConfigError):
        get_evaluator("nb201_table", pth="x")  # bad keyword -> one-paragraph error, not a TypeError
