"""Entry point of the ``autobuild`` command.

Sub-commands live next to the code they drive and register themselves through a
``register(subparsers)`` function that adds a parser and sets ``func=callable(args) -> int``.
Modules are listed here (not discovered) so that start-up stays fast and predictable.

User-fixable errors (:class:`search_spaces.errors.AutoBuildError`, pydantic validation errors)
print as one paragraph and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

# Top-level command modules, and the modules of the `bench` group.
COMMAND_MODULES = [
    "autobuild_cli.commands",
]
BENCH_MODULES = [
    "benchmarks.ranker",
    "benchmarks.motifs",
    "benchmarks.train",
    "benchmarks.search",
    "benchmarks.tune",
    "benchmarks.studies",
    "benchmarks.transnas",
    "benchmarks.all",
]


def build_parser(bench_commands: bool = True) -> argparse.ArgumentParser:
    """The full parser; ``bench_commands=False`` skips importing the benchmark modules (some import
    torch or pandas at module level, seconds of start-up that only `autobuild bench` needs)."""
    parser = argparse.ArgumentParser(prog="autobuild", description="AutoBuild: interpretable module scores for neural architecture search.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    bench = sub.add_parser("bench", help="benchmarks: print a summary and write JSON with --json")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    for name in BENCH_MODULES if bench_commands else []:
        importlib.import_module(name).register(bench_sub)
    bench.set_defaults(func=lambda args: (bench.print_help(), 2)[1])
    return parser


def format_error(exc: BaseException) -> str:
    """One readable paragraph for a user-fixable error."""
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore
    if ValidationError and isinstance(exc, ValidationError):
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()))
            lines.append(f"{loc or 'config'}: {err.get('msg')}")
        return "Invalid configuration: " + "; ".join(lines) + ". Fix these fields in the config file or --set overrides."
    return str(exc)


class _NoTracebackForUserErrors(logging.Filter):
    """Drops the traceback Prefect's engine logs for a flow or task that raised a user-fixable
    error: the CLI prints that error as one paragraph, and a traceback above it would bury the
    message and suggest a bug. The log line itself (with the message) is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        from search_spaces.errors import AutoBuildError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, AutoBuildError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_user_errors() -> None:
    """Without --debug: no tracebacks for user errors from Prefect's loggers, and no dependency
    deprecation warnings (torch_geometric's use of torch.jit.script) that a user cannot act on."""
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForUserErrors) for f in log.filters):  # main() may run repeatedly in-process
            log.addFilter(_NoTracebackForUserErrors())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(bench_commands="bench" in argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not args.debug:
        _quiet_user_errors()
    from search_spaces.errors import AutoBuildError

    user_errors: tuple = (AutoBuildError, FileNotFoundError)
    try:
        from pydantic import ValidationError

        user_errors = user_errors + (ValidationError,)
    except ImportError:  # pragma: no cover
        pass
    try:
        rc = args.func(args)
    except user_errors as exc:
        if args.debug:
            raise
        print(f"autobuild: error: {format_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # a command may say what survives an interruption (set_defaults(interrupt_hint=...))
        hint = vars(args).get("interrupt_hint") or ("this benchmark wrote nothing yet." if args.command == "bench" else
                                                    "stored evaluations are kept and a rerun resumes.")
        print(f"autobuild: interrupted; {hint}", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
