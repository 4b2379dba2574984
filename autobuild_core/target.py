"""Target expressions: what the ranker learns to predict, written as arithmetic over metric names.

Users write things like ``acc - 2*log(latency_gpu)`` in configs and on the command line, so the
text is untrusted. It is parsed with :mod:`ast` and evaluated by walking a small whitelist of node
types: numbers, metric names, + - * / // % **, unary +/-, and calls to a handful of math
functions. Attribute access, subscripts, comprehensions, lambdas, keywords and everything else are
rejected before anything runs; exponents are bounded so ``9**9**9`` cannot hang the process.
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from search_spaces.errors import ExpressionError, suggest

MAX_EXPRESSION_LENGTH = 500
MAX_EXPONENT = 64.0

_FUNCTIONS: dict[str, Callable] = {
    "log": math.log,
    "log2": math.log2,
    "log10": math.log10,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "abs": abs,
    "min": min,
    "max": max,
}

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _check(node: ast.AST, names: set, text: str) -> None:
    """Reject anything outside the whitelist, collecting metric names on the way."""
    if isinstance(node, ast.Expression):
        _check(node.body, names, text)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ExpressionError(f"Target {text!r}: only numeric constants are allowed, found {node.value!r}.")
    elif isinstance(node, ast.Name):
        if node.id in _FUNCTIONS:
            raise ExpressionError(f"Target {text!r}: {node.id!r} is a function; call it like {node.id}(x).")
        names.add(node.id)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise ExpressionError(f"Target {text!r}: operator {type(node.op).__name__} is not allowed (use + - * / // % **).")
        _check(node.left, names, text)
        _check(node.right, names, text)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise ExpressionError(f"Target {text!r}: unary operator {type(node.op).__name__} is not allowed.")
        _check(node.operand, names, text)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExpressionError(
                f"Target {text!r}: call to {what!r} is not allowed; allowed functions: {', '.join(sorted(_FUNCTIONS))}."
            )
        if node.keywords:
            raise ExpressionError(f"Target {text!r}: keyword arguments are not allowed.")
        if not node.args:
            raise ExpressionError(f"Target {text!r}: {node.func.id}() needs an argument.")
        for a in node.args:
            _check(a, names, text)
    else:
        raise ExpressionError(
            f"Target {text!r}: {type(node).__name__} is not allowed; use metric names, numbers, + - * / ** and "
            f"{', '.join(sorted(_FUNCTIONS))}()."
        )


def _eval(node: ast.AST, env: Mapping[str, float]) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ExpressionError(f"exponent {right} is larger than the allowed {MAX_EXPONENT:g}")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, env))
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id](*[_eval(a, env) for a in node.args])
    raise ExpressionError(f"unsupported node {type(node).__name__}")  # unreachable after _check


@dataclass(frozen=True)
class Target:
    """A compiled target; call it on a metrics mapping to get one float.

    Build it with :func:`compile_target`, not directly.

    Attributes:
        text: the expression as written (stripped).
        names: the metric names it uses.
    """

    text: str
    names: frozenset
    _tree: ast.Expression

    def check_names(self, available: Iterable[str]) -> "Target":
        """Return self if every metric the target uses is available.

        Args:
            available: the metric names the labels carry.

        Raises:
            ExpressionError: naming the missing metrics, with suggestions.
        """
        available = set(available)
        missing = sorted(self.names - available)
        if missing:
            hints = "".join(suggest(m, available) for m in missing)
            raise ExpressionError(
                f"Target {self.text!r} uses unknown metric(s) {', '.join(missing)}.{hints} "
                f"Available metrics: {', '.join(sorted(available)) or '(none)'}."
            )
        return self

    def __call__(self, metrics: Mapping[str, float]) -> float:
        """The target's value for one architecture.

        Args:
            metrics: metric name -> value (extra names are ignored).

        Raises:
            ExpressionError: a metric is missing, or the value cannot be computed (``log(0)``,
                division by zero, overflow, an exponent beyond ``MAX_EXPONENT``).
        """
        self.check_names(metrics.keys())
        env = {k: float(metrics[k]) for k in self.names}
        try:
            value = float(_eval(self._tree, env))
        except (ZeroDivisionError, ValueError, OverflowError) as exc:
            raise ExpressionError(f"Target {self.text!r} cannot be computed for {env}: {exc}.") from None
        return value

    def __str__(self) -> str:
        return self.text


def compile_target(text: str) -> Target:
    """Parse and whitelist-check a target expression once.

    Args:
        text: a metric name or an arithmetic expression over metric names.

    Raises:
        ExpressionError: the text is empty, too long, not valid syntax or uses anything outside
            the whitelist; the message gives the reason.

    Example:
        >>> t = compile_target("acc - 2*log(latency_ms)")
        >>> sorted(t.names), round(t({"acc": 94.0, "latency_ms": 1.0}), 2)
        (['acc', 'latency_ms'], 94.0)
    """
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("Target expression is empty; give a metric name such as 'acc' or an expression such as 'acc - 2*log(latency_ms)'.")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"Target expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_LENGTH}.")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"Target {text!r} is not a valid expression ({exc.msg} at column {exc.offset}).") from None
    names: set = set()
    _check(tree, names, text)
    return Target(text.strip(), frozenset(names), tree)


def default_target(metric_names: Iterable[str]) -> str:
    """The only accuracy-like metric among ``metric_names`` (acc, top1, perf, ...).

    Args:
        metric_names: the metrics the labels carry.

    Raises:
        ExpressionError: none or several are accuracy-like; the user must pass a target.
    """
    names = list(metric_names)
    acc = [n for n in names if any(t in n.lower() for t in ("acc", "top1", "top-1", "perf"))]
    if len(acc) == 1:
        return acc[0]
    raise ExpressionError(
        f"Cannot choose a default target: {'several' if acc else 'no'} accuracy-like metrics among {names}. "
        "Pass one with --target (a metric name or an expression)."
    )
