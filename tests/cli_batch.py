"""Run several `autobuild` command lines in one Python process, each through the real
``autobuild_cli.main.main`` with its own environment and with file descriptors 1 and 2 captured
(so output from any logger or C library is caught too, as a terminal would show it).

Used by tests whose cases all fail before a server starts: one interpreter start-up (torch,
Prefect, MLflow imports: seconds each) instead of one per case.

    python tests/cli_batch.py cases.json results.json

``cases.json``: a list of ``{"argv": [...], "env": {...}, "cwd": "..."}``; ``results.json``: a
list of ``{"returncode": int, "stdout": str, "stderr": str}`` in the same order. A case whose
``main`` raises instead of returning gets return code 1 and the traceback on its stderr, as a
process would.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback


def _run_one(argv: list[str], env: dict[str, str], cwd: str) -> dict:
    from autobuild_cli.main import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_fds = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse errors
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - an uncaught error is what the case reports
            traceback.print_exc()
            rc = 1
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved_fds[0], 1), os.dup2(saved_fds[1], 2)
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
        out.seek(0), err.seek(0)
        return {"returncode": int(rc or 0), "stdout": out.read().decode(errors="replace"), "stderr": err.read().decode(errors="replace")}


if __name__ == "__main__":
    cases = json.loads(open(sys.argv[1], encoding="utf-8").read())
    results = [_run_one(c["argv"], c["env"], c["cwd"]) for c in cases]
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(results, f)
