"""`autobuild run | spaces | report | serve | trigger`.

Prefect, MLflow and the flows are imported inside the command functions, so `autobuild --help`
stays fast.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from search_spaces.errors import ConfigError

from .stack import alive, kill_groups, wait_http

STATE_FILE = Path(".autobuild") / "serve.json"


def register(sub) -> None:
    p = sub.add_parser("run", help="run the AutoBuild pipeline from a YAML config")
    p.add_argument("-c", "--config", default=None, help="YAML config (default: the built-in defaults = quickstart-like)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set search.budget=100 (repeatable; values are YAML)")
    p.add_argument("--out", default=None, help="run directory (default runs/<config name>); rerun with the same --out to resume")
    p.add_argument("--preset", default=None, choices=["default", "paper"],
                   help="settings to start from: default (best measured) or paper (the paper's protocol); the config and --set override it")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("spaces", help="list the search spaces and their sizes")
    p.set_defaults(func=cmd_spaces)

    p = sub.add_parser("report", help="write the HTML report of a finished run")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve", help="start a local Prefect server, MLflow server and worker; deploy prefect.yaml")
    p.add_argument("--stop", action="store_true", help="stop what a previous `serve` started")
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite",
                   help="sqlite: servers on SQLite files, one worker; postgres: the docker/compose.yaml topology natively "
                        "(own PostgreSQL cluster, Prefect and MLflow with auth, workers)")
    p.add_argument("--restart", default=None, metavar="PIECE",
                   help="(postgres backend) restart one piece: postgres, prefect_server, mlflow_server, workers or worker-N")
    p.add_argument("--credentials", default=None, metavar="FILE",
                   help="(postgres backend) KEY=VALUE credentials file outside the project; default: environment, "
                        "else generated once into <home>/credentials.env (0600)")
    p.add_argument("--workers", type=int, default=None, help="(postgres backend) process workers (default: WORKERS in docker/stack.env)")
    p.add_argument("--prefect-port", type=int, default=4200)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.add_argument("--pool", default="local", help="process work pool the local worker serves")
    p.add_argument("--no-deploy", action="store_true", help="do not run `prefect deploy --all`")
    p.add_argument("--home", default=".autobuild/serve", help="directory of server state, logs and the MLflow store")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each service")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("trigger", help="trigger a deployment through the Prefect API")
    p.add_argument("deployment", help="FLOW/DEPLOYMENT, e.g. autobuild/quickstart")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="flow parameter (YAML value); dotted keys set nested fields, e.g. config.search.budget=20")
    p.add_argument("--wait", action="store_true", help="wait for the flow run to finish")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.set_defaults(func=cmd_trigger)


# ---- run ---------------------------------------------------------------------------------------


def check_prefect_api(timeout_s: float = 10.0) -> str | None:
    """If PREFECT_API_URL points at a server, make sure it answers; returns the URL (or None: ephemeral)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return None
    try:
        req = urllib.request.Request(url.rstrip("/") + "/health")
        auth = os.environ.get("PREFECT_API_AUTH_STRING")
        if auth:
            import base64

            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 - user-configured URL
            r.read(64)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise ConfigError(
            f"The Prefect API at {url} is unreachable ({getattr(e, 'reason', e)}) within {timeout_s:g}s. Start it "
            "(`autobuild serve`), fix PREFECT_API_URL, or unset PREFECT_API_URL to run on a temporary local server."
        ) from None
    return url


def cmd_run(args) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from tasks.config import load_config

    cfg = load_config(args.config, ([f"preset={args.preset}"] if args.preset else []) + args.overrides)
    out = Path(args.out or Path("runs") / cfg.name)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a directory.")
    from tasks.preflight import preflight

    preflight(cfg, out)  # names, paths, expressions, stored artefacts: fail before anything is written
    check_prefect_api()
    if cfg.tracking.enabled and cfg.tracking.tracking_uri:
        from flows.tracking import check_reachable

        check_reachable(cfg.tracking.tracking_uri, cfg.tracking.timeout_s)  # fail before any server starts
    out.mkdir(parents=True, exist_ok=True)
    from flows.pipeline import autobuild

    t0 = time.perf_counter()
    state = autobuild(cfg.model_dump(mode="json"), str(out), return_state=True)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if not state.is_completed():
        err = summary.get("error") or getattr(state, "message", "") or state.name
        try:
            state.result()
        except Exception as exc:  # re-raise user-fixable errors so the CLI prints one paragraph
            from search_spaces.errors import AutoBuildError

            if isinstance(exc, AutoBuildError):
                raise
        print(f"autobuild: run failed: {err}", file=sys.stderr)
        print(f"Summary: {summary_path}", file=sys.stderr)
        return 1
    print_summary(summary, out, time.perf_counter() - t0)
    return 0


def _two(v) -> str:
    """A correlation as people read it (two decimals), or n/a."""
    return "n/a" if v is None or v != v else f"{v:.2f}"


def print_summary(s: dict, out: Path, seconds: float) -> None:
    from tasks.report import rounded

    ev = s.get("evaluations", {})
    rk = s.get("ranker", {})
    best = s.get("best") or {}
    print(f"\nAutoBuild {s.get('status')} in {seconds:.0f}s: space {s.get('space')}, evaluator {s['evaluator']['kind']}, "
          f"target {s.get('target')}, search {s.get('search_method')}")
    cal = s.get("calibration")
    if cal and cal.get("chosen"):
        print(f"  calibration: {cal['chosen']['epochs']} epochs x {cal['chosen']['n_train'] or 'all'} training images, ceiling "
              f"{rounded(cal.get('ceiling'), 3)} >= {cal.get('threshold')} ({cal.get('new')} new trainings, {cal.get('reused')} reused)")
    print(f"  evaluations: {ev.get('total')} total ({ev.get('new')} new, {ev.get('reused')} reused, {ev.get('failed')} failed)")
    if s.get("searched_table_rows"):
        print(f"  searched: the {s['searched_table_rows']} architectures the table holds (a part of the space)")
    if (s.get("seed_ranker") or {}).get("skipped"):
        print(f"  seed ranker: skipped, {s['seed_ranker']['n_ok']} of {s['seed_ranker']['n_seeds']} seed evaluations succeeded "
              "(the search's own rankers took over)")
    if rk:
        if rk.get("spearman_on") == "training":  # too few seeds to hold any out
            print(f"  seed ranker: Spearman {_two(rk.get('heldout_spearman'))} on its {rk.get('n_train')} training architectures "
                  "(too few to hold any out; an in-sample figure)")
        else:
            print(f"  seed ranker: held-out Spearman {_two(rk.get('heldout_spearman'))} ({rk.get('n_train')} architectures)")
    last = (s.get("search") or {}).get("last_round")
    if last:
        print(f"  search rankers, round {last.get('round')}: held-out Spearman {_two(last.get('val_spearman'))} "
              f"({last.get('n_evaluated')} architectures evaluated)")
    for b in s.get("built", []):
        print(f"  built: {json.dumps(b['arch'], default=str)} -> {rounded(b.get('values'))}")
    if best:
        print(f"  best ({best.get('source')}): {s.get('target')} {rounded(best.get('target'))}  {json.dumps(best.get('arch'), default=str)}")
    print(f"\nSummary:   {out / 'summary.json'}")
    if s.get("mlflow_run_url"):
        print(f"MLflow run: {s['mlflow_run_url']}")
    uri = s.get("mlflow_tracking_uri")
    if uri:
        mlflow_bin = os.path.relpath(_venv_bin("mlflow")) if os.path.isabs(_venv_bin("mlflow")) else "mlflow"
        if uri.startswith(("http://", "https://")):
            print(f"MLflow UI: {uri}   (run {s.get('mlflow_run_id')})")
        else:
            print(f"MLflow UI: {mlflow_bin} ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000   (run {s.get('mlflow_run_id')})")
        if s.get("mlflow_runs_url"):
            print(f"MLflow runs: {s['mlflow_runs_url']}")
    if s.get("report"):
        print(f"Report:    {s['report']}")
    elif (out / "report.html").is_file():
        print(f"Report:    {out / 'report.html'}")


# ---- spaces, report ------------------------------------------------------------------------------


def cmd_spaces(args) -> int:
    from search_spaces import get_space, list_spaces

    print(f"{'space':<16} {'units':>5} {'unit configs':>13} {'size':>24}")
    for name in list_spaces():
        try:
            sp = get_space(name)
            n_cfg = sum(sp.n_unit_configs())
            print(f"{name:<16} {len(sp.units):>5} {n_cfg:>13,} {sp.size():>24,}")
        except Exception as e:  # a space that cannot load (missing optional package) is listed with why
            print(f"{name:<16} unavailable: {type(e).__name__}: {e}")
    return 0


def cmd_report(args) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no such directory).")
    try:
        from tasks.report import write_report
    except ImportError:
        print("autobuild: the report module is not available in this version; nothing written.", file=sys.stderr)
        return 1
    path = write_report(run_dir)
    print(f"Report: {path}")
    return 0


# ---- serve -----------------------------------------------------------------------------------------


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _spawn(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    f = open(log, "ab")
    return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _venv_bin(name: str) -> str:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def cmd_serve(args) -> int:
    from . import stack

    backend = json.loads(STATE_FILE.read_text()).get("backend") if STATE_FILE.is_file() else None
    if args.stop:
        return stack.stop(STATE_FILE) if backend == "postgres" else _serve_stop()
    if args.restart:
        return stack.restart(STATE_FILE, args.restart, args.timeout)
    if args.backend == "postgres":
        return stack.serve(args, STATE_FILE)
    if STATE_FILE.is_file():
        state = json.loads(STATE_FILE.read_text())
        alive = [p for p in state.get("pids", {}).values() if alive(p)]
        if alive:
            raise ConfigError(f"`autobuild serve` already runs (PIDs {alive}); stop it with `autobuild serve --stop`.")
    for port in (args.prefect_port, args.mlflow_port):
        if not _free(port):
            raise ConfigError(f"port {port} on 127.0.0.1 is in use; pass --prefect-port/--mlflow-port.")
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    api = f"http://127.0.0.1:{args.prefect_port}/api"
    mlflow_uri = f"http://127.0.0.1:{args.mlflow_port}"
    env = dict(os.environ, PREFECT_HOME=str(home / "prefect"), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    pids: dict[str, int] = {}
    try:
        srv = _spawn([_venv_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(args.prefect_port)],
                     home / "prefect-server.log", dict(env, PREFECT_API_URL="", PREFECT_SERVER_UI_API_URL=api))
        pids["prefect_server"] = srv.pid
        mlf = _spawn([_venv_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(args.mlflow_port),
                      "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "mlartifacts"),
                      "--workers", "1"], home / "mlflow-server.log", env)
        pids["mlflow_server"] = mlf.pid
        _write_state(pids, api, mlflow_uri, home)
        wait_http(f"{api}/health", args.timeout, proc=srv, log=home / "prefect-server.log")
        wait_http(f"{mlflow_uri}/health", args.timeout, proc=mlf, log=home / "mlflow-server.log")
        wenv = dict(env, MLFLOW_TRACKING_URI=mlflow_uri, AUTOBUILD_TRACKING_URI=mlflow_uri)
        for pool in dict.fromkeys([args.pool, "local", "gpu"]):  # prefect.yaml deploys to both pools
            subprocess.run([_venv_bin("prefect"), "work-pool", "create", pool, "--type", "process", "--overwrite"],
                           env=env, check=False, capture_output=True, timeout=args.timeout)
        wk = _spawn([_venv_bin("prefect"), "worker", "start", "--pool", args.pool, "--type", "process"], home / "worker.log", wenv)
        pids["worker"] = wk.pid
        _write_state(pids, api, mlflow_uri, home)
        if not args.no_deploy and Path("prefect.yaml").is_file():
            r = subprocess.run([_venv_bin("prefect"), "--no-prompt", "deploy", "--all"], env=env, capture_output=True, text=True,
                               timeout=max(args.timeout, 300))
            (home / "deploy.log").write_text(r.stdout + r.stderr)
            if r.returncode != 0:
                print(f"warning: `prefect deploy --all` failed (see {home / 'deploy.log'})", file=sys.stderr)
    except BaseException:
        _serve_stop(quiet=True)
        raise
    print(f"Prefect UI/API: http://127.0.0.1:{args.prefect_port}   (`autobuild trigger` here or below finds it in {STATE_FILE}; "
          f"other clients: export PREFECT_API_URL={api})")
    print(f"MLflow UI:      {mlflow_uri}   (export MLFLOW_TRACKING_URI={mlflow_uri})")
    print(f"Worker on pool '{args.pool}'; logs and state in {home}")
    print("Trigger:        autobuild trigger autobuild/quickstart --param config.search.budget=30")
    print("Stop:           autobuild serve --stop")
    return 0


def _write_state(pids: dict, api: str, mlflow_uri: str, home: Path) -> None:
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps({"pids": pids, "prefect_api_url": api, "mlflow_tracking_uri": mlflow_uri, "home": str(home)}, indent=1))


def _serve_stop(quiet: bool = False) -> int:
    if not STATE_FILE.is_file():
        if not quiet:
            print("nothing to stop (no .autobuild/serve.json)")
        return 0
    state = json.loads(STATE_FILE.read_text())
    pids = state.get("pids", {})
    kill_groups([pids.get(name) for name in ("worker", "mlflow_server", "prefect_server")])  # each in its own session
    STATE_FILE.unlink(missing_ok=True)
    if not quiet:
        print(f"stopped {', '.join(f'{k} ({v})' for k, v in pids.items())}")
    return 0


# ---- trigger --------------------------------------------------------------------------------------


def parse_params(items: list[str]) -> dict:
    from tasks.config import apply_overrides

    return apply_overrides({}, items)


def find_serve_state(start: str | os.PathLike | None = None) -> tuple[Path | None, dict | None, list[Path]]:
    """The state `autobuild serve` wrote: ``.autobuild/serve.json`` in ``start`` (default: the
    current directory) or the nearest parent holding one.

    Returns ``(path, state, looked_at)``; ``path`` and ``state`` are None when none is found or the
    file cannot be read, and ``looked_at`` lists every path checked (for the error message).
    """
    here = Path(start or Path.cwd()).resolve()
    looked: list[Path] = []
    for d in (here, *here.parents):
        cand = d / STATE_FILE
        looked.append(cand)
        if cand.is_file():
            try:
                state = json.loads(cand.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(state, dict) and state.get("prefect_api_url"):
                return cand, state, looked
    return None, None, looked


def cmd_trigger(args) -> int:
    if "/" not in args.deployment:
        raise ConfigError(f"deployment {args.deployment!r} must be FLOW_NAME/DEPLOYMENT_NAME, e.g. autobuild/quickstart.")
    url = os.environ.get("PREFECT_API_URL") or None
    if url is None:
        path, state, looked = find_serve_state()
        if path is None:
            shown = ", ".join(str(p) for p in looked[:6]) + (f" (and {len(looked) - 6} more parents)" if len(looked) > 6 else "")
            raise ConfigError(f"No Prefect server to trigger on: PREFECT_API_URL is not set and no {STATE_FILE} (written by "
                              f"`autobuild serve`) was found; looked at {shown}. Run `autobuild serve` in this directory "
                              "(or a parent), or set PREFECT_API_URL.")
        url = state["prefect_api_url"]
        os.environ["PREFECT_API_URL"] = url  # for anything that reads the environment later
        if state.get("backend") == "postgres" and not os.environ.get("PREFECT_API_AUTH_STRING"):
            from .stack import credentials_of

            os.environ["PREFECT_API_AUTH_STRING"] = credentials_of(state)["PREFECT_AUTH_STRING"]
        print(f"Prefect API: {url} (from {path})")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):  # also when prefect was imported before the variable was set
        check_prefect_api()
        return _trigger(args, url)


def _trigger(args, url: str) -> int:
    overrides = parse_params(args.params)
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(args.deployment)
        except Exception as e:
            raise ConfigError(f"deployment {args.deployment!r} not found on {url} ({type(e).__name__}). `prefect deployment ls` lists them.") from None
    from tasks.config import deep_merge

    params = deep_merge(dict(dep.parameters or {}), overrides)  # --param refines the deployment's defaults

    fr = run_deployment(args.deployment, parameters=params, timeout=args.timeout if args.wait else 0)
    print(f"flow run {fr.id} ({fr.name}) for {args.deployment}: {fr.state.name if fr.state else 'scheduled'}")
    print(f"  {url.rstrip('/').removesuffix('/api')}/runs/flow-run/{fr.id}")
    if args.wait:
        ok = fr.state is not None and fr.state.is_completed()
        run_dir = Path(str(params.get("run_dir") or ""))
        if ok and (run_dir / "summary.json").is_file():  # a worker on this machine: show the outcome as `autobuild run` does
            start, end = fr.start_time, fr.end_time
            print_summary(json.loads((run_dir / "summary.json").read_text()), run_dir,
                          (end - start).total_seconds() if start and end else 0.0)
        return 0 if ok else 1
    return 0
