"""Concurrent runs writing the same new MLflow rows (experiment tag, registered model, model
versions, alias) all succeed: MLflow's SQL store sets them with select-then-insert, so without
the retry one of 8 runs starting at once could fail with a unique-key error."""

from __future__ import annotations

import threading

import pytest

from flows.tracking import Tracker, is_write_conflict, retry_on_conflict
from tasks.config import TrackingSection


def test_conflict_errors_are_recognised_and_others_are_not():
    from mlflow.exceptions import MlflowException

    pg = MlflowException('(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "registered_model_alias_pk"')
    lite = MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: experiment_tags.key, experiment_tags.experiment_id")
    assert is_write_conflict(pg) and is_write_conflict(lite)
    assert not is_write_conflict(MlflowException("RESOURCE_DOES_NOT_EXIST: Registered Model with name=x not found"))

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise pg
        return "ok"

    assert retry_on_conflict(flaky) == "ok" and len(calls) == 3

    def broken():
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: no such model")

    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        retry_on_conflict(broken)


def test_eight_runs_registering_the_same_model_at_once_all_succeed(tmp_path):
    from mlflow import MlflowClient

    cfg = TrackingSection(experiment="race")
    Tracker(cfg, tmp_path)  # create the store's schema once (migrations are not concurrent-safe)
    n, errors, versions = 8, [], []
    start = threading.Barrier(n)

    def one(i: int) -> None:
        try:
            tracker = Tracker(cfg, tmp_path)
            run = tracker.start(f"run-{i}")
            run.text("{}", "model/MLmodel")
            start.wait()
            versions.append(run.register("autobuild-ranker-race", "model", aliases=["newest"], model_description="race test"))
            run.tags({"stage": "done"})
            run.end()
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(int(v) for v in versions) == list(range(1, n + 1))
    client = MlflowClient(tracking_uri=Tracker(cfg, tmp_path).uri, registry_uri=Tracker(cfg, tmp_path).uri)
    model = client.get_registered_model("autobuild-ranker-race")
    assert model.description == "race test"
    assert int(model.aliases["newest"]) in range(1, n + 1)
