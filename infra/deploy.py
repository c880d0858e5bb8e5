"""The obscast deployments, read from ``infra/prefect.yaml`` and served with Prefect.

``prefect deploy --all --prefect-file infra/prefect.yaml`` (plus a process worker) and
``obscast serve`` (:func:`serve_deployments`, no work pool needed) both take the deployments from
that one file: names, entrypoints, cron schedules, parameter defaults, concurrency limits.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from obscast.components.errors import ConfigError, ObscastError

PREFECT_FILE = Path(__file__).with_name("prefect.yaml")
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment of ``infra/prefect.yaml``.

    Attributes
    ----------
    name : str
        Deployment name (``daily``); the full name is ``<flow name>/<name>``, e.g. ``verify/daily``.
    entrypoint : str
        ``flows/<module>.py:<function>``, relative to the repository root.
    crons : list of str
        Cron expressions (empty: started by hand only), evaluated in ``timezone``.
    timezone : str
        IANA time zone of the cron expressions (``UTC``).
    parameters : dict
        Parameter defaults of the flow runs.
    concurrency_limit : int or None
        Most flow runs of this deployment at a time (None: no limit).
    collision_strategy : str
        What happens to a run over the limit: ``ENQUEUE`` (wait) or ``CANCEL_NEW``.
    description : str
    tags : list of str
    work_pool : str or None
        Work pool for ``prefect deploy`` (``obscast serve`` needs none).
    """

    name: str
    entrypoint: str
    crons: list[str] = field(default_factory=list)
    timezone: str = "UTC"
    parameters: dict[str, Any] = field(default_factory=dict)
    concurrency_limit: int | None = None
    collision_strategy: str = "ENQUEUE"
    description: str = ""
    tags: list[str] = field(default_factory=list)
    work_pool: str | None = None

    @property
    def module(self) -> str:
        """Import path of the flow's module in the installed package, e.g. ``obscast.flows.verify``."""
        return "obscast." + self.entrypoint.split(":")[0].removesuffix(".py").replace("/", ".")

    @property
    def function(self) -> str:
        """Name of the flow function, e.g. ``verify_flow``."""
        return self.entrypoint.split(":")[1]

    @property
    def source_file(self) -> Path:
        """The flow's source file."""
        return REPO_ROOT / self.entrypoint.split(":")[0]

    def matches(self, selector: str) -> bool:
        """Whether ``selector`` names this deployment: ``verify/daily``, ``verify`` or ``daily``."""
        stem = self.module.rsplit(".", 1)[-1]
        return selector in (f"{stem}/{self.name}", stem, self.name)


def read_deployments(prefect_file: str | os.PathLike = PREFECT_FILE) -> list[DeploymentSpec]:
    """Read and check the deployments of a ``prefect.yaml``.

    The file is validated with Prefect's own model of ``prefect.yaml`` (what ``prefect deploy``
    accepts), then each deployment is checked for what obscast needs.

    Returns
    -------
    list of DeploymentSpec

    Raises
    ------
    ConfigError
        If the file is missing or not valid YAML, or a deployment lacks ``name`` or a
        ``path.py:function`` entrypoint, has a schedule that is not a cron expression, or a
        concurrency limit that is not a positive integer. The message names the file and deployment.
    """
    from prefect.cli.deploy._models import PrefectYamlModel
    from pydantic import ValidationError

    path = Path(prefect_file)
    if not path.is_file():
        raise ConfigError(f"{path}: deployment file not found (expected a prefect.yaml)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        PrefectYamlModel.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from exc
    specs = []
    for i, d in enumerate(raw.get("deployments") or []):
        where = f"{path}: deployments[{i}]"
        if not d.get("name") or ":" not in str(d.get("entrypoint", "")) or not str(d["entrypoint"]).split(":")[0].endswith(".py"):
            raise ConfigError(f"{where}: expected a 'name' and an 'entrypoint' of the form flows/<module>.py:<function>, found {d}")
        crons, zones = [], set()
        for s in d.get("schedules") or []:
            if not isinstance(s, dict) or not s.get("cron"):
                raise ConfigError(f"{where} ({d['name']}): schedules: expected entries with 'cron', found {s!r}")
            crons.append(s["cron"])
            zones.add(s.get("timezone") or "UTC")
        if len(zones) > 1:
            raise ConfigError(f"{where} ({d['name']}): schedules: expected one timezone, found {sorted(zones)}")
        limit = d.get("concurrency_limit")
        strategy = "ENQUEUE"
        if isinstance(limit, dict):
            strategy = limit.get("collision_strategy") or strategy
            limit = limit.get("limit")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"{where} ({d['name']}): concurrency_limit: expected a positive integer, found {limit!r}")
        specs.append(DeploymentSpec(
            name=d["name"], entrypoint=d["entrypoint"], crons=crons, timezone=zones.pop() if zones else "UTC",
            parameters=dict(d.get("parameters") or {}), concurrency_limit=limit, collision_strategy=strategy,
            description=d.get("description") or "", tags=list(d.get("tags") or []), work_pool=(d.get("work_pool") or {}).get("name"),
        ))
    return specs


def select(specs: list[DeploymentSpec], selectors: list[str] | None, source: str | os.PathLike = PREFECT_FILE) -> list[DeploymentSpec]:
    """The deployments named by ``selectors`` (all when None or empty).

    Raises
    ------
    ConfigError
        If a selector names no deployment (the known names are listed).
    """
    if not selectors:
        return list(specs)
    chosen = []
    for sel in selectors:
        hits = [s for s in specs if s.matches(sel)]
        if not hits:
            known = [f"{s.module.rsplit('.', 1)[-1]}/{s.name}" for s in specs]
            raise ConfigError(f"{source}: deployment {sel!r} not found (have {known})")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def load_flow(spec: DeploymentSpec):
    """Import the flow of a deployment.

    Raises
    ------
    ObscastError
        If the module or the function does not exist, naming the entrypoint.
    """
    if not spec.source_file.is_file():
        raise ObscastError(f"{spec.entrypoint}: flow file {spec.source_file} not found (deployment {spec.name!r} of {PREFECT_FILE})")
    module = importlib.import_module(spec.module)
    flow = getattr(module, spec.function, None)
    if flow is None or not hasattr(flow, "to_deployment"):
        raise ObscastError(f"{spec.entrypoint}: expected a Prefect flow named {spec.function!r} in {spec.source_file}")
    return flow


def runner_deployment(spec: DeploymentSpec, defaults: dict[str, Any] | None = None, paused_schedules: bool = False):
    """A ``RunnerDeployment`` (what ``prefect.serve`` takes) built from ``spec``.

    Parameters
    ----------
    spec : DeploymentSpec
    defaults : dict, optional
        Parameter defaults that replace the file's (e.g. ``{"store": "s3://bucket/obscast"}``);
        a key that is not a parameter of the flow is left out.
    paused_schedules : bool
        Declare the schedules inactive: runs start only when triggered (for tests and debugging).
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Schedule

    flow = load_flow(spec)
    accepted = set(flow.parameters.properties)
    parameters = {**spec.parameters, **{k: v for k, v in (defaults or {}).items() if k in accepted}}
    limit = None
    if spec.concurrency_limit is not None:
        limit = ConcurrencyLimitConfig(limit=spec.concurrency_limit, collision_strategy=ConcurrencyLimitStrategy(spec.collision_strategy))
    return flow.to_deployment(
        name=spec.name,
        schedules=[Schedule(cron=c, timezone=spec.timezone, active=not paused_schedules) for c in spec.crons],
        parameters=parameters, concurrency_limit=limit, description=spec.description, tags=spec.tags,
        entrypoint_type=EntrypointType.MODULE_PATH,  # runs import obscast.flows.<module>: works from any directory
    )


def serve_deployments(
    selectors: list[str] | None = None, defaults: dict[str, Any] | None = None, paused_schedules: bool = False,
    limit: int | None = None, prefect_file: str | os.PathLike = PREFECT_FILE,
) -> list[str]:
    """Register the deployments with the Prefect server at ``PREFECT_API_URL`` and run their flow
    runs in this process (each in a subprocess) until interrupted (``obscast serve``).

    Parameters
    ----------
    selectors : list of str, optional
        Deployments to serve (``verify/daily``, ``verify`` or ``daily``); all when None.
    defaults : dict, optional
        Parameter defaults for every deployment (``config_path``, ``store``).
    paused_schedules : bool
        Keep the schedules inactive (runs only when triggered).
    limit : int, optional
        Most flow runs this process runs at a time (all deployments together).
    prefect_file : path-like
        The deployment file (default ``infra/prefect.yaml``).

    Returns
    -------
    list of str
        Full names of the deployments that were served (after the server is stopped).

    Raises
    ------
    ObscastError
        If ``PREFECT_API_URL`` is not set (an ephemeral server would vanish with this process),
        or a flow cannot be imported. ConfigError for a bad deployment file or name.
    """
    from prefect import serve

    if not os.environ.get("PREFECT_API_URL"):
        raise ObscastError("PREFECT_API_URL is not set: start a server (`python -m obscast.infra.stack start`) and export the variables it prints")
    deployments = [runner_deployment(s, defaults, paused_schedules) for s in select(read_deployments(prefect_file), selectors, prefect_file)]
    serve(*deployments, limit=limit)
    return [f"{d.flow_name}/{d.name}" for d in deployments]
