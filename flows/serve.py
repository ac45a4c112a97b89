"""The retrain deployment: served from this process (`reweigh serve`) or run by a work pool's worker (`reweigh deploy`).

Both register the same deployment, `retrain/<retrain.deployment>`, with the cron schedule, its time zone
and the default parameters (workspace, pull, push, remote, lock timeout) from params.yaml's `retrain:`
section, on the Prefect server that PREFECT_API_URL names. Prefect allows one run of it at a time
(further runs wait: ENQUEUE); the workspace lock in flows/retrain/flow.py guards everything else.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

import reweigh  # noqa: F401  (offline defaults)
from reweigh.params import RetrainParams, load_params

ENTRYPOINT = "flows/retrain/flow.py:retrain_flow"


class ServeError(RuntimeError):
    """No server to register with, or a setting the deployment cannot use."""


def api_url() -> str:
    """The Prefect API to register with; a clear error when none is set or none answers."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ServeError(
            "PREFECT_API_URL is not set, so there is no server to show the deployment.\n"
            "  Start one:   prefect server start            (UI and API on http://127.0.0.1:4200)\n"
            "  Then:        export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        raise ServeError(f"no Prefect server answers at {url} ({exc}): start it with `prefect server start`") from None
    return url


def deployment_settings(workdir: Path, name: str | None, cron: str | None) -> tuple[RetrainParams, dict[str, Any]]:
    settings = load_params(workdir / "params.yaml").retrain
    if name or cron:
        settings = RetrainParams.model_validate({**settings.model_dump(), **({"deployment": name} if name else {}),
                                                 **({"cron": cron} if cron else {})})
    parameters = {"workdir": str(workdir), "pull": settings.pull, "push": settings.push,
                  "remote": settings.remote, "lock_timeout": settings.lock_timeout}
    return settings, parameters


def _schedule(settings: RetrainParams):
    from prefect.schedules import Cron

    return Cron(settings.cron, timezone=settings.timezone)


def _one_at_a_time():
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def serve(workdir: Path | None = None, name: str | None = None, cron: str | None = None) -> None:
    """Register the deployment and run its scheduled and UI-started runs from this process until stopped."""
    workdir = (workdir or Path.cwd()).resolve()
    url = api_url()
    settings, parameters = deployment_settings(workdir, name, cron)
    os.chdir(workdir)  # the runner loads flows/retrain/flow.py relative to here
    from flows.retrain.flow import retrain_flow

    print(f"serving retrain/{settings.deployment} on {url}: cron '{settings.cron}' ({settings.timezone}), workspace {workdir}")
    retrain_flow.serve(
        name=settings.deployment,
        schedule=_schedule(settings),
        parameters=parameters,
        global_limit=_one_at_a_time(),
        tags=["reweigh", "retrain"],
        description="Retrain: dvc pull → dvc repro / dvc exp run → dvc metrics diff → dvc push (docs/retraining.md)",
    )


def deploy(pool: str, workdir: Path | None = None, name: str | None = None, cron: str | None = None,
           job_variables: dict[str, Any] | None = None) -> str:
    """Register the deployment with work pool `pool`; `prefect worker start --pool POOL` then runs it."""
    workdir = (workdir or Path.cwd()).resolve()
    api_url()
    settings, parameters = deployment_settings(workdir, name, cron)
    from flows.retrain.flow import retrain_flow

    flow = retrain_flow.from_source(source=str(workdir), entrypoint=ENTRYPOINT)
    deployment_id = flow.deploy(
        name=settings.deployment,
        work_pool_name=pool,
        schedule=_schedule(settings),
        parameters=parameters,
        concurrency_limit=_one_at_a_time(),
        job_variables=job_variables or {},
        tags=["reweigh", "retrain"],
        build=False,
        push=False,
        print_next_steps=False,
    )
    print(f"deployed retrain/{settings.deployment} to work pool '{pool}' (cron '{settings.cron}' {settings.timezone}); "
          f"start a worker: prefect worker start --pool {pool}")
    return str(deployment_id)
