"""What the platform view shows: pipelines, model versions, gate figures, drift, lineage, audit.

Plain data (JSON-able dicts), read from the platform's own records, so that the plugin's HTML
pages and its JSON endpoints show the same thing and tests can check it without a browser:

* pipelines: the valid pipeline files with their DAG ids and schedules (``retrain``,
  ``monitoring``, ``source``);
* a model: its MLflow versions (aliases, lineage tags, the gate's figures), the ``models.config``
  labels and the version the server serves by its rule (:mod:`mlplatform.reconcile`), the
  version a rollback without ``to_version`` goes to, the last drift check
  (:mod:`mlplatform.monitoring.state`), the retrain decisions and the audit trail;
* a version's lineage: data version -> validation (Data Docs) -> features -> Airflow run ->
  MLflow run -> model version -> served version, each step with a link.

The gate's figures come from the gate stage's ``summary.json`` of the run that trained the
version (``<storage>/<pipeline>/<run>/gate/``): challenger vs champion and per slice when it
passed, the refusal line when it did not. Links into the Airflow UI are paths on the API
server (``/dags/<dag>/runs/<run>``), reports are served by the plugin (``/mlplatform/reports/``),
MLflow links use ``MLP_MLFLOW_UI_URL``. MLflow is imported on first use.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from mlplatform.config import PipelineConfig, load_pipelines, pipeline_files
from mlplatform.settings import Settings
from mlplatform.storage import run_key, to_path

REPORTS_PREFIX = "/mlplatform"  # where plugins/mlplatform_plugin.py mounts its app


class UnknownModel(LookupError):
    """No valid pipeline serves a model of that name."""


def pipeline_configs(settings: Settings) -> list[PipelineConfig]:
    """The valid pipeline configs, by file name."""
    items = load_pipelines(pipeline_files(settings.pipelines_dir))
    return [item.config for item in items if item.config is not None]


def config_of_model(settings: Settings, model: str) -> PipelineConfig:
    """The config of the pipeline serving ``model``; :class:`UnknownModel` otherwise."""
    for cfg in pipeline_configs(settings):
        if cfg.serving.model_name == model:
            return cfg
    raise UnknownModel(f"no pipeline serves a model named {model!r}")


def dag_url(dag_id: str, run_id: str | None = None, task_id: str | None = None) -> str:
    """A path of the Airflow 3 UI: a DAG, one of its runs, or a task of that run."""
    url = f"/dags/{quote(dag_id, safe='')}"
    if run_id:
        url += f"/runs/{quote(run_id, safe='')}"
        if task_id:
            url += f"/tasks/{quote(task_id, safe='')}"
    return url


def report_url(settings: Settings, uri: str | None) -> str | None:
    """The plugin's URL of a report file under the storage (``file://`` URI or path), or None
    when it is not under the storage."""
    if not uri:
        return None
    try:
        relative = to_path(uri).relative_to(to_path(settings.storage))
    except ValueError:
        return None
    return f"{REPORTS_PREFIX}/reports/{quote(relative.as_posix())}"


def pipeline_summary(cfg: PipelineConfig) -> dict[str, Any]:
    """One pipeline: model, DAGs and schedules."""
    name = cfg.name
    dags = {"train": f"mlp_{name}_train", "rollback": f"mlp_{name}_rollback"}
    dags["score"] = f"mlp_{name}_score"
    if cfg.monitoring.schedule:
        dags["monitor"] = f"mlp_{name}_monitor"
    if cfg.source.uri:
        dags["ingest"] = f"mlp_{name}_ingest"
    triggers = [f"cron {cfg.retrain.schedule}"] if cfg.retrain.schedule else []
    if cfg.retrain.on_new_data and cfg.source.uri:
        triggers.append("new data (asset)")
    if cfg.retrain.on_drift:
        triggers.append("drift (asset)")
    return {
        "pipeline": name,
        "model": cfg.serving.model_name,
        "description": cfg.description,
        "dags": dags,
        "dag_urls": {kind: dag_url(dag_id) for kind, dag_id in dags.items()},
        "retrain": triggers or ["manual only"],
        "monitoring_schedule": cfg.monitoring.schedule,
        "ingest_schedule": cfg.source.schedule if cfg.source.uri else None,
        "gate": {
            "metric": cfg.gate.metric,
            "min": cfg.gate.min,
            "max_regression": cfg.gate.max_regression,
        },
    }


def gate_result(settings: Settings, pipeline: str, airflow_run_id: str | None) -> dict[str, Any]:
    """The gate stage's outputs of the run that trained a version: the figures and ``decision``
    when it passed, ``{"refused": line}`` when not, ``{}`` when the run left no gate summary."""
    if not airflow_run_id:
        return {}
    path = to_path(settings.storage) / pipeline / run_key(airflow_run_id) / "gate" / "summary.json"
    try:
        outputs = json.loads(path.read_text()).get("outputs") or {}
    except (OSError, ValueError):
        return {}
    if "skipped" in outputs:
        return {"decision": "refused", "refused": outputs["skipped"]}
    if "failed" in outputs:
        return {"decision": "failed", "refused": outputs["failed"]}
    return outputs


def last_drift(settings: Settings, pipeline: str) -> dict[str, Any] | None:
    """The last completed drift check of ``pipeline`` (None before the first), with its report's
    URL."""
    from mlplatform.monitoring.state import read_state

    state = read_state(settings, pipeline)
    result = dict(state.get("result") or {})
    if not result:
        return None
    result["run"] = state.get("run")
    result["report_url"] = report_url(settings, result.get("report"))
    return result


def _served(settings: Settings, model: str) -> tuple[int | None, dict[str, int], str | None]:
    """``(served version, labels, error)`` from the model base's ``models.config``."""
    from serving import layout

    base = settings.models_dir
    try:
        config = layout.read_config_in_effect(base) or {}
        served = layout.served_version(base, model)
    except ValueError as exc:
        return None, {}, str(exc)
    labels = dict((config.get(model) or {}).get("labels") or {})
    return served, {k: int(v) for k, v in labels.items()}, None


def rollback_target(published: list[int], served: int | None) -> int | None:
    """The version a rollback without ``to_version`` serves (the newest published version
    older than the served one: :func:`mlplatform.stages.registry.rollback`'s rule)."""
    if served is None:
        return None
    older = [v for v in published if v < served]
    return older[-1] if older else None


def model_view(settings: Settings, cfg: PipelineConfig, history: int = 20) -> dict[str, Any]:
    """Everything the model page shows (see the module doc); versions newest first, the last
    ``history`` decisions and audit entries newest first."""
    from mlplatform import audit, decisions
    from mlplatform.reconcile.inspect import _read_registry
    from serving import layout

    name = cfg.serving.model_name
    registered, registry, aliases = _read_registry(settings, name)
    served, labels, serving_error = _served(settings, name)
    published = layout.list_versions(settings.models_dir, name)
    by_version_aliases: dict[int, list[str]] = {}
    for alias, version in aliases.items():
        by_version_aliases.setdefault(version, []).append(alias)
    by_version_labels: dict[int, list[str]] = {}
    for label, version in labels.items():
        by_version_labels.setdefault(version, []).append(label)
    versions = []
    for number in sorted(set(registry) | set(published), reverse=True):
        record = registry.get(number)
        tags = dict(record.tags) if record else {}
        versions.append(
            {
                "version": number,
                "created": record.created.isoformat(timespec="seconds") if record else None,
                "aliases": sorted(by_version_aliases.get(number, [])),
                "labels": sorted(by_version_labels.get(number, [])),
                "served": number == served,
                "published": number in published,
                "registered": record is not None,
                "rolled_back": tags.get("rolled_back") == "true",
                "data_version": tags.get("data_version"),
                "airflow_run_id": tags.get("airflow_run_id"),
                "mlflow_run_id": record.run_id if record else None,
                "gate": gate_result(settings, cfg.name, tags.get("airflow_run_id")),
            }
        )
    return {
        **pipeline_summary(cfg),
        "registered": registered,
        "aliases": aliases,
        "labels": labels,
        "served_version": served,
        "serving_error": serving_error,
        "published": published,
        "rollback_default": rollback_target(published, served),
        "versions": versions,
        "last_drift": last_drift(settings, cfg.name),
        "decisions": [
            {"time": d.time, "run_id": d.run_id, "summary": d.summary()}
            for d in reversed(decisions.read(settings, cfg.name)[-history:] if history else [])
        ],
        "audit": [
            {
                "time": e.time,
                "action": e.action,
                "actor": e.actor,
                "reason": e.reason,
                "version": e.version,
                "run_id": e.run_id,
                "details": e.details,
            }
            for e in reversed(audit.read(settings, cfg.name)[-history:] if history else [])
        ],
    }


def _mlflow_run_url(settings: Settings, run_id: str | None) -> str | None:
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    from mlplatform.stages.registry import client

    try:
        experiment = client(settings).get_run(run_id).info.experiment_id
    except MlflowException:
        return None
    return f"{settings.mlflow_ui_url}/#/experiments/{experiment}/runs/{run_id}"


def version_lineage(settings: Settings, cfg: PipelineConfig, version: int) -> dict[str, Any]:
    """The lineage chain of ``version`` (see the module doc): ``steps`` in order, each with
    ``step``, ``value`` and ``href`` (None where the record is missing: the chain says so rather
    than skipping a step). :class:`UnknownModel` when the registry has no such version."""
    from mlplatform.reconcile.inspect import _read_registry

    name = cfg.serving.model_name
    _registered, registry, aliases = _read_registry(settings, name)
    record = registry.get(version)
    if record is None:
        raise UnknownModel(f"{name} has no registered version {version}")
    tags = record.tags
    run_id = tags.get("airflow_run_id")
    train_dag = f"mlp_{cfg.name}_train"
    served, labels, _error = _served(settings, name)
    served_labels = sorted(label for label, v in labels.items() if v == version)
    gate = gate_result(settings, cfg.name, run_id)

    def at(task: str) -> str | None:
        return dag_url(train_dag, run_id, task) if run_id else None

    steps = [
        {"step": "data version", "value": tags.get("data_version"), "href": at("ingest")},
        {
            "step": "validation (Data Docs)",
            "value": tags.get("validation"),
            "href": report_url(settings, tags.get("data_docs")),
        },
        {"step": "features", "value": tags.get("feature_service"), "href": at("features")},
        {
            "step": "Airflow run",
            "value": run_id,
            "href": dag_url(train_dag, run_id) if run_id else None,
        },
        {
            "step": "MLflow run",
            "value": record.run_id,
            "href": _mlflow_run_url(settings, record.run_id),
        },
        {
            "step": "model version",
            "value": f"{name} v{version}",
            "href": f"{settings.mlflow_ui_url}/#/models/{quote(name)}/versions/{version}",
        },
        {
            "step": "served version",
            "value": (
                f"v{version} ({', '.join(served_labels) or 'served'})"
                if version == served or served_labels
                else f"not served (served: v{served})"
                if served
                else "not served"
            ),
            "href": f"{REPORTS_PREFIX}/models/{quote(name)}#v{version}",
        },
    ]
    return {
        "model": name,
        "pipeline": cfg.name,
        "version": version,
        "aliases": sorted(a for a, v in aliases.items() if v == version),
        "tags": tags,
        "gate": gate,
        "steps": steps,
    }


def ui_links(
    settings: Settings,
    cfg: PipelineConfig,
    version: int,
    airflow_run_id: str,
    tags: dict[str, str],
    base_url: str,
) -> dict[str, str]:
    """http links into the Airflow UI for a model version's MLflow tags: its Airflow run
    (``airflow_run_url``), its page in the platform view (``platform_url``) and, when the
    lineage tags name them, its Data Docs (``data_docs_url``). ``base_url``: the API server."""
    base = base_url.rstrip("/")
    links = {
        "airflow_run_url": base + dag_url(f"mlp_{cfg.name}_train", airflow_run_id),
        "platform_url": f"{base}{REPORTS_PREFIX}/models/{quote(cfg.serving.model_name)}/versions/{version}",
    }
    docs = report_url(settings, tags.get("data_docs"))
    if docs:
        links["data_docs_url"] = base + docs
    return links
