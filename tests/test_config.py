"""RunConfig: YAML + --set overrides, clear errors for typos, wrong types and escaping paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.config import RunConfig, apply_overrides, config_hash, load_config, resolve_in_run_dir
from search_spaces.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)


def test_required_configs_exist():
    names = {p.name for p in CONFIGS}
    for n in ("quickstart.yaml", "nb201_cifar10.yaml", "ofa_mbv3_imagenet_table.yaml", "ofa_mbv3_fashion_mnist.yaml",
              "ofa_pn_fashion_mnist.yaml", "nb201_accuracy_latency.yaml"):
        assert n in names


def test_typo_in_key_names_key_and_suggestion(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("space: nb201\ntrain:\n  epochz: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "epochz" in msg and "'epochs'" in msg and "train" in msg and str(p) in msg


def test_typo_in_top_level_section(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("serach:\n  budget: 3\n")
    with pytest.raises(ConfigError, match=r"serach.*did you mean 'search'"):
        load_config(p)


def test_wrong_type_names_field():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.epochs=lots"])
    assert "train.epochs" in str(e.value) and "lots" in str(e.value)


def test_out_of_range_and_literal():
    with pytest.raises(ConfigError, match="search.method"):
        load_config(None, ["search.method=annealing"])
    with pytest.raises(ConfigError, match="failure.max_failure_fraction"):
        load_config(None, ["failure.max_failure_fraction=2"])
    with pytest.raises(ConfigError, match="prune.k"):
        load_config(None, ["prune.k=[3, 0]"])


def test_overrides_are_yaml_scalars():
    cfg = load_config(REPO / "configs" / "quickstart.yaml",
                      ["search.budget=7", "prune.k=[2,3,4,5,6]", "evaluator.settings.dataset=citeseer", "build.enabled=false",
                       "search.objectives=[{expr: acc}, {expr: latency_ms, direction: minimize}]"])
    assert cfg.search.budget == 7 and cfg.prune.k == [2, 3, 4, 5, 6]
    assert cfg.evaluator.settings["dataset"] == "citeseer" and cfg.build.enabled is False
    assert [o.direction for o in cfg.objectives()] == ["maximize", "minimize"]


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["search.budget"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: [nb201\n")
    with pytest.raises(ConfigError, match="not valid YAML.*line"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)


def test_written_paths_stay_in_run_dir(tmp_path):
    for override in ("evaluator.store=../../etc/x.sqlite", "evaluator.store=/tmp/x.sqlite", "search.storage=../o.db"):
        with pytest.raises(ConfigError, match="inside the run directory"):
            load_config(None, [override])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "link").symlink_to(tmp_path)
    with pytest.raises(ConfigError, match="outside the run directory"):
        resolve_in_run_dir(tmp_path / "run", "link/escape.db")
    assert resolve_in_run_dir(tmp_path / "run", "sub/ok.db") == (tmp_path / "run" / "sub" / "ok.db").resolve()


def test_schema_has_descriptions_for_prefect_form():
    schema = RunConfig.model_json_schema()
    train = schema["$defs"]["TrainConfig"]["properties"]
    assert train["epochs"]["description"]
    assert schema["additionalProperties"] is False


def test_config_hash_stable_and_sensitive():
    a, b = load_config(None), load_config(None, ["train.epochs=3"])
    assert config_hash(a.train) == config_hash(load_config(None).train)
    assert config_hash(a.train) != config_hash(b.train)


def test_cli_prints_one_paragraph_without_traceback(tmp_path, capsys):
    from autobuild_cli.main import main

    p = tmp_path / "c.yaml"
    p.write_text("seeds:\n  nn: 3\n")
    rc = main(["run", "-c", str(p), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "'nn'" in err and "did you mean 'n'" in err
    assert not (tmp_path / "out").exists()  # nothing written on bad input
