"""The `evaluate-batch` flow: evaluate a batch of architectures into an evaluation store.

Deployable on its own (e.g. on a `gpu` work pool) so that real training runs on GPU workers while
the driver flow runs on a CPU; the driver calls it in-process as a subflow when
``evaluator.deployment`` is unset. Chunks fan out as tasks, at most ``concurrency`` at a time in
this flow run (and server-wide by a tag concurrency limit on ``tag``); a chunk that raises is
retried by Prefect, a single failing architecture is a stored failure record.
"""

from __future__ import annotations

from prefect import flow

from tasks.stages import evaluate_chunk


@flow(name="evaluate-batch", flow_run_name="evaluate-{evaluator}-{space}", validate_parameters=True)
def evaluate_batch(
    space: str,
    archs: list,
    evaluator: str,
    settings: dict | None = None,
    store: str = "evaluations.sqlite",
    seed: int = 0,
    retries: int = 2,
    batch_size: int = 64,
    concurrency: int = 2,
    tag: str = "autobuild-eval",
    task_retries: int = 2,
    retry_delay_s: float = 1.0,
) -> dict:
    """Evaluate ``archs`` (native encodings of ``space``) with ``evaluator``(``settings``) into ``store``.

    Returns counts: ``n``, ``new``, ``reused``, ``failed`` (per chunk, summed).
    """
    settings = dict(settings or {})
    chunks = [archs[i:i + batch_size] for i in range(0, len(archs), max(1, batch_size))]
    run_chunk = evaluate_chunk.with_options(tags=[tag], retries=task_retries, retry_delay_seconds=retry_delay_s)
    totals = {"n": 0, "new": 0, "reused": 0, "failed": 0}
    in_flight: list = []

    def collect(fut) -> None:
        res = fut.result()
        for k in totals:
            totals[k] += int(res.get(k, 0))

    for chunk in chunks:
        if len(in_flight) >= max(1, concurrency):
            collect(in_flight.pop(0))
        in_flight.append(run_chunk.submit(space, chunk, evaluator, settings, store, seed, retries))
    for fut in in_flight:
        collect(fut)
    return totals
