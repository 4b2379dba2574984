"""Label-noise report: known answers on synthetic repeats, and the store-backed measurement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from evaluation_fakes import FakeEvaluator, FakeSpace
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluators import EvaluationStore, evaluate_archs, measure_noise, noise_report


def test_known_answer_adjacent_swaps():
    a = np.arange(1.0, 11.0)
    b = a.copy()
    b[0::2], b[1::2] = a[1::2], a[0::2]  # swap neighbours: every |Δ| is 1, every rank moves by 1
    r = noise_report(a, b, metric="acc")
    assert r.n == 10 and r.mean_abs_diff == 1.0
    assert r.sd_within == pytest.approx(math.sqrt(0.5))
    rho = 1 - 6 * 10 / (10 * (100 - 1))  # Spearman with sum d^2 = 10
    assert r.spearman_repeat == pytest.approx(rho) and r.pearson_repeat == pytest.approx(rho)
    assert r.spearman_ceiling == pytest.approx(math.sqrt(rho))
    assert r.sd_across == pytest.approx(np.std((a + b) / 2, ddof=1))
    assert r.reliability == pytest.approx(1 - 0.5 / np.var(np.concatenate([a, b]), ddof=1))
    assert "acc" in r.summary()


def test_anticorrelated_repeats_give_zero_ceiling_and_degenerate_cases():
    a = np.arange(5.0)
    assert noise_report(a, -a).spearman_ceiling == 0.0
    assert noise_report([], []).n == 0
    assert math.isnan(noise_report([1.0, 1.0], [1.0, 1.0]).spearman_repeat)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=3, max_size=30, unique=True))
def test_identical_repeats_are_noise_free(xs):
    r = noise_report(xs, xs)
    assert r.mean_abs_diff == 0.0 and r.sd_within == 0.0
    assert r.spearman_repeat == 1.0 and r.spearman_ceiling == 1.0


def test_measure_noise_through_store(tmp_path):
    st, sp = EvaluationStore(tmp_path / "e.sqlite"), FakeSpace()
    ev = FakeEvaluator()
    out = evaluate_archs(ev, sp, list(range(40)), st, progress=False, noise_fraction=0.25)
    # the seed-0 pass is reused; only the 10 repeats at seed 1 are new evaluations
    assert len(ev.calls) == 50 and sum(s == 1 for _, s in ev.calls) == 10
    rep = out.noise["acc"]
    # FakeEvaluator adds 0.01 * seed: a constant shift, so ranks are untouched
    assert rep.n == 10 and rep.mean_abs_diff == pytest.approx(0.01) and rep.spearman_ceiling == pytest.approx(1.0)
    again = measure_noise(FakeEvaluator(), sp, list(range(40)), st, fraction=0.25)
    assert again["acc"] == rep and len(st) == 50
