"""Target expressions: arithmetic over metric names, and nothing else."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces.errors import ExpressionError
from autobuild_core.target import compile_target, default_target


def test_arithmetic_and_whitelisted_functions():
    t = compile_target("acc - 2*log(latency_gpu) + max(acc, 1) ** 2 / 100")
    assert t.names == {"acc", "latency_gpu"}
    assert t({"acc": 90.0, "latency_gpu": math.e}) == pytest.approx(90 - 2 + 81)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("__import__('os').system('true')", "not allowed"),
        ("acc.__class__", "Attribute"),
        ("open('x')", "not allowed"),
        ("acc[0]", "Subscript"),
        ("(lambda: 1)()", "not allowed"),
        ("acc if acc else 1", "IfExp"),
        ("'a' + acc", "numeric constants"),
        ("log(x=acc)", "keyword"),
        ("acc +", "not a valid expression"),
        ("", "empty"),
        ("log", "is a function"),
        ("acc << 2", "not allowed"),
    ],
)
def test_rejects_unsafe_or_malformed(text, fragment):
    with pytest.raises(ExpressionError, match=fragment):
        compile_target(text)


def test_huge_exponent_is_refused_not_computed():
    t = compile_target("acc ** 9 ** 9")
    with pytest.raises(ExpressionError, match="exponent"):
        t({"acc": 2.0})


def test_unknown_metric_suggests_closest():
    t = compile_target("accuracy - latency")
    with pytest.raises(ExpressionError, match="accuracy.*Did you mean 'acc"):
        t.check_names(["acc", "latency"])


def test_math_domain_error_is_a_clear_error():
    with pytest.raises(ExpressionError, match="cannot be computed"):
        compile_target("log(acc)")({"acc": 0.0})


def test_default_target():
    assert default_target(["cifar10_test_acc", "latency_ms"]) == "cifar10_test_acc"
    with pytest.raises(ExpressionError, match="--target"):
        default_target(["latency_ms", "params"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_garbage_only_raises_expression_error(text):
    try:
        t = compile_target(text)
    except ExpressionError:
        return
    try:
        t({n: 1.5 for n in t.names})
    except ExpressionError:
        pass
