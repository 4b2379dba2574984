"""`RunConfig`: the one validated set of parameters of an AutoBuild run.

YAML files in ``configs/`` map onto it, ``autobuild run --set a.b=value`` overrides any field, and
the Prefect flow takes it as its single parameter (the Prefect UI renders the JSON schema, with
the field descriptions below, as a form).

Every section forbids unknown keys, so a typo never silently falls back to a default: the error
names the key, where it is, and the closest known key. Paths that the run *writes* (the
evaluation store, the Optuna study) are relative to the run directory and may not leave it.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autobuild_core.driver import PRESETS, AutoBuildSettings, BuildSettings, PruneSettings, SearchSettings, SeedSettings, preset_overrides
from autobuild_core.settings import RankerConfig, TrainConfig
from evaluators.calibration import CalibrationSettings
from search_spaces.errors import ConfigError

__all__ = [
    "RunConfig",
    "load_config",
    "apply_overrides",
    "config_hash",
    "resolve_in_run_dir",
    "config_from",
    "deep_merge",
    "format_validation_error",
]


class _Section(BaseModel):
    """Base of every section: unknown keys are errors (reported with the closest known key)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EvaluatorSection(_Section):
    kind: str = Field("nasbench_graph", description="Evaluator name (see `evaluators.list_evaluators()`): e.g. nasbench_graph, nb201_table, table, training.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Evaluator settings, passed to get_evaluator(kind, **settings): dataset, table path, training budget, ...")
    store: str = Field("evaluations.sqlite", description="Evaluation store (SQLite) path, relative to the run directory; reruns reuse what it holds.")
    batch_size: int = Field(64, ge=1, description="Architectures per evaluation task (the unit of fan-out and of retries).")
    concurrency: int = Field(2, ge=1, description="Evaluation tasks running at once in this flow run.")
    tag: str = Field("autobuild-eval", description="Prefect tag of evaluation tasks: `prefect concurrency-limit create <tag> N` limits them server-wide.")
    deployment: Optional[str] = Field(None, description="Deployment of the `evaluate_batch` flow (e.g. 'evaluate-batch/evaluate-gpu') to run evaluations on a work pool; unset: evaluate in this process.")
    deployment_timeout_s: float = Field(3600.0, gt=0, description="How long to wait for one remote evaluation batch.")


class SeedsSection(SeedSettings):
    source: Literal["sample", "table"] = Field("sample", description="'sample' draws from the space; 'table' takes seeds from the architectures the (table) evaluator holds.")


class Objective(_Section):
    expr: str = Field(..., description="Metric name or arithmetic expression over metrics (e.g. 'accuracy', 'latency').")
    direction: Literal["maximize", "minimize"] = Field("maximize", description="Optimisation direction.")


class SearchSection(SearchSettings):
    objectives: list[Objective] = Field(default_factory=list, description="Objectives; empty means the run's target, maximised.")
    storage: str = Field("optuna.db", description="Optuna study SQLite file, relative to the run directory (optuna-dashboard opens it).")


class WinnersSection(_Section):
    top: int = Field(3, ge=0, description="How many of the best architectures found are re-evaluated with the final protocol.")
    evaluator_settings: dict[str, Any] = Field(default_factory=dict, description="Overrides of evaluator.settings for the final evaluation (e.g. more epochs, or the table's final metric).")
    seed: int = Field(0, description="Evaluation seed of the final evaluation.")


class TrackingSection(_Section):
    enabled: bool = Field(True, description="Log to MLflow.")
    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI; unset: $AUTOBUILD_TRACKING_URI (set by `autobuild serve` for its worker), else sqlite:///<run dir>/mlflow.db.")
    experiment: str = Field("autobuild", description="MLflow experiment name.")
    register_models: bool = Field(True, description="Register the ranker and the winners in the MLflow model registry.")
    timeout_s: float = Field(10.0, gt=0, description="Give up on an unreachable tracking server after this many seconds.")


class FailureSection(_Section):
    retries: int = Field(2, ge=0, description="Retries of a failed evaluation (transient failures).")
    retry_delay_s: float = Field(1.0, ge=0, description="Delay between task retries.")
    max_failure_fraction: float = Field(0.2, ge=0, le=1, description="The run fails when more than this fraction of evaluations fail.")


class RunConfig(_Section):
    """All parameters of one AutoBuild run: the method's :class:`AutoBuildSettings` sections plus
    what a run needs around them (space, evaluator, winners, tracking, failure handling)."""

    name: str = Field("autobuild", description="Run name (MLflow run name, Prefect flow-run name prefix).")
    preset: Literal[PRESETS] = Field("default", description="Settings the config starts from: 'default' (best measured) or 'paper' (the paper's protocol); keys given here override it.")
    space: str = Field("nasbench_graph", description="Search space name (`autobuild spaces`).")
    seed: int = Field(0, description="Seed of sampling, ranker training and search.")
    target: str = Field("acc", description="Target the ranker learns: a metric name or an expression such as 'acc - 2*log(latency)'.")
    evaluator: EvaluatorSection = Field(default_factory=EvaluatorSection, description="How architectures are evaluated.")
    seeds: SeedsSection = Field(default_factory=SeedsSection, description="Seed architectures.")
    ranker: RankerConfig = Field(default_factory=RankerConfig, description="Ranker architecture.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Ranker training.")
    prune: PruneSettings = Field(default_factory=PruneSettings, description="Space pruning.")
    build: BuildSettings = Field(default_factory=BuildSettings, description="Building from top-scored configurations.")
    search: SearchSection = Field(default_factory=SearchSection, description="Search (its budget counts every evaluation of the run).")
    winners: WinnersSection = Field(default_factory=WinnersSection, description="Final evaluation of the best architectures.")
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings, description="Calibration of the training protocol before the seeds (training evaluator only): the cheapest candidate budget whose repeat trainings rank.")
    tracking: TrackingSection = Field(default_factory=TrackingSection, description="MLflow tracking.")
    failure: FailureSection = Field(default_factory=FailureSection, description="Failure handling.")

    def settings(self) -> AutoBuildSettings:
        """The method's settings, exactly as `autobuild bench` takes them."""
        return AutoBuildSettings(
            seeds=SeedSettings(**self.seeds.model_dump(exclude={"source"})), ranker=self.ranker, train=self.train,
            prune=self.prune, build=self.build, search=SearchSettings(**self.search.model_dump(exclude={"objectives", "storage"})))

    @model_validator(mode="after")
    def _relative_paths(self) -> "RunConfig":
        for where, p in (("evaluator.store", self.evaluator.store), ("search.storage", self.search.storage)):
            _check_relative(where, p)
        return self

    def objectives(self) -> list[Objective]:
        return list(self.search.objectives) or [Objective(expr=self.target, direction="maximize")]

    def final_evaluator_settings(self) -> dict:
        merged = dict(self.evaluator.settings)
        merged.update(self.winners.evaluator_settings)
        return merged


def _check_relative(where: str, p: str) -> None:
    path = Path(p)
    if path.is_absolute() or ".." in path.parts or not p.strip():
        raise ValueError(f"{where}={p!r} must be a relative path inside the run directory (no '..', not absolute)")


def resolve_in_run_dir(run_dir: str | os.PathLike, rel: str, what: str = "path") -> Path:
    """``run_dir / rel``, refusing anything that resolves outside the run directory (symlinks too)."""
    base = Path(run_dir).resolve()
    target = (base / rel).resolve()
    if target != base and base not in target.parents:
        raise ConfigError(f"{what} {rel!r} resolves to {target}, outside the run directory {base}. Use a path relative to the run directory.")
    return target


# ---------------------------------------------------------------------------------------------
# Loading, overrides, errors


def _known_keys_at(path: list[str]) -> list[str]:
    model: Any = RunConfig
    for key in path:
        field = getattr(model, "model_fields", {}).get(key)
        if field is None:
            return []
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(getattr(model, "model_fields", {}))


def format_validation_error(exc: ValidationError, source: str = "config") -> str:
    """One paragraph naming every bad field with what is wrong and the offending value."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err.get("type") == "extra_forbidden":
            *parent, key = [str(p) for p in err.get("loc", ())] or ["?"]
            known = _known_keys_at(parent)
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
            close = close or [n for n in known if n.startswith(key) or key.startswith(n)][:1]
            msg = f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "") + f"; known keys here: {', '.join(known)}"
        elif err.get("type") not in ("value_error", "assertion_error") and "input" in err:
            inp = err["input"]
            if not isinstance(inp, (dict, list)):
                msg += f" (got {inp!r})"
        parts.append(f"{loc or 'top level'}: {msg}")
    return f"Invalid configuration in {source}: " + "; ".join(parts) + ". Fix the config file or the --set override."


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=50")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set {item!r}: the key must be dotted field names, e.g. search.budget")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: the value is not a valid YAML scalar/list ({e.__class__.__name__}).") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Return a copy of ``data`` with each ``a.b.c=value`` override applied (values are YAML)."""
    data = copy.deepcopy(data)
    for item in overrides or []:
        path, value = _parse_override(item)
        node = data
        for i, p in enumerate(path[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(path[:i + 1])} is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return data


def config_from(config: dict | RunConfig | None = None, config_file: str | os.PathLike | None = None) -> RunConfig:
    """The run config of a flow run: ``config_file`` (YAML) with the ``config`` dict laid over it.

    Args:
        config: a full or partial config (a dict, e.g. from the Prefect API) or a RunConfig.
        config_file: a YAML config the deployment names; relative paths are from the working directory.
    """
    if isinstance(config, RunConfig):
        config = config.model_dump(mode="json")
    if config_file is None:
        return load_config(None, base=dict(config or {}))
    return load_config(config_file, base=None, over=dict(config or {}))


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None, base: dict | None = None,
                over: dict | None = None) -> RunConfig:
    """Read a YAML config (or the defaults when ``path`` is None), apply ``--set`` overrides, validate.

    Raises :class:`ConfigError` with one readable paragraph for a missing/unparseable file, an
    unknown key (with the closest known key) or a value of the wrong type/range (naming the field).
    """
    source = "defaults"
    data: Any = {}
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"Config file {str(p)!r} does not exist. Pass an existing YAML file, e.g. configs/quickstart.yaml.")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"Config file {source!r} is not valid YAML{where}: {getattr(e, 'problem', e)}. Fix the syntax.") from None
        except UnicodeDecodeError:
            raise ConfigError(f"Config file {source!r} is not UTF-8 text.") from None
        if not isinstance(data, dict):
            raise ConfigError(f"Config file {source!r} must hold a mapping of sections (space:, evaluator:, ...), not a {type(data).__name__}.")
    if base is not None:
        data = dict(base)
    if over:
        data = deep_merge(data, over)
    data = apply_overrides(data, overrides)
    preset = data.get("preset", "default")
    if isinstance(preset, str) and preset in PRESETS:
        data = deep_merge(preset_overrides(preset), data)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` laid on ``base``, section by section."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _canonical(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return _canonical(obj.model_dump(mode="json"))
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    return obj


def config_hash(*parts: Any, n: int = 16) -> str:
    """Stable short hash of config sections and input fingerprints (keys stage outputs)."""
    blob = json.dumps([_canonical(p) for p in parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]
