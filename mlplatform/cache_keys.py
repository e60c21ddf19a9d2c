"""What determines each stage's output: the parts of its cache key, and the checks of a reuse.

One function per stage returns the parts that :func:`mlplatform.cache.stage_key` hashes (None
when the stage cannot be cached for this run), and, where a recorded output lives outside the
run's own files, a check that says why it cannot be reused (None when it can). The operators
(:class:`operators.base.PlatformOperator` subclasses) call them; this module needs no Airflow.

=================  ==================================================================
stage              key parts
=================  ==================================================================
ingest             the source section (without ``uri``), each file's name, size and
                   sha256 (S3: key, size, ETag); a SQL source is not cacheable
validate           data version, ``validation`` section, the suite file's sha256, the
                   columns the platform's own checks read, GX version
features           data version, ``features`` and ``source`` sections, the feature
                   definitions code, the online store; *state*: the offline store files,
                   the apply record and the materialization ledger (:func:`feast_state`)
training_set       data version, ``features``/``source`` sections, ``retrain.window_days``,
                   the feature definitions code and :func:`feast_state` as it is now
train              the training set's bytes (train and hold-out sha256, whichever run
                   wrote them: a rebuilt but identical training set trains nothing),
                   ``model``, ``training``, ``features`` sections,
                   :func:`~mlplatform.lineage.trainer_code_hash`, TensorFlow/Horovod versions
register           train key, ``serving.model_name``
gate               register key, the hold-out's sha256, ``gate``/``features`` sections, model
                   kind, the champion version (none when the champion *is* the challenger)
infra_validate     register key, the hold-out's sha256, ``serving``/``features`` sections,
                   the serving runtime's code
promote            infra_validate key, model name, ``serving.canary``; reused only while the
                   label and alias still point at the promoted version
=================  ==================================================================

Every key also holds the hash of the stage's own code (:func:`mlplatform.cache.code_hash`).
"""

from __future__ import annotations

import subprocess
from typing import Any

from mlplatform.cache import CACHE_KEY, code_hash, directory_state, file_digest, library_versions
from mlplatform.config import PipelineConfig
from mlplatform.settings import Settings
from mlplatform.storage import to_path

#: each stage's code (relative to the platform checkout), part of its key
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "ingest": ("mlplatform/stages/ingest.py", "mlplatform/sources", "mlplatform/object_store.py"),
    "validate": ("mlplatform/stages/validate.py",),
    "features": (
        "mlplatform/stages/features.py",
        "mlplatform/stages/materialize.py",
        "mlplatform/stages/offline_schema.py",
        "mlplatform/stages/offline_sync.py",
        "feature_repo/definitions.py",
    ),
    "training_set": ("mlplatform/stages/features.py", "feature_repo/definitions.py"),
    "register": ("mlplatform/stages/registry.py",),
    "gate": ("mlplatform/stages/registry.py", "mlplatform/scoring.py"),
    "infra_validate": ("mlplatform/stages/infra_validate.py", "mlplatform/scoring.py", "serving"),
    "promote": ("mlplatform/stages/registry.py", "serving/layout"),
}


def _code(settings: Settings, stage: str) -> str:
    return code_hash(settings.repo_root, STAGE_CODE[stage])


def _section(model: Any, *exclude: str) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude=set(exclude))


def upstream_key(xcom: Any) -> str | None:
    """The cache key an upstream stage's XCom carries (None: that stage has none)."""
    return xcom.get(CACHE_KEY) if isinstance(xcom, dict) else None


# ------------------------------------------------------------------------------ data stages


def ingest_parts(cfg: PipelineConfig, source_uri: str, settings: Settings) -> dict | None:
    from mlplatform import sources

    files = sources.fingerprint(source_uri, cfg, settings)
    if files is None:
        return None
    return {
        "source": _section(cfg.source, "uri"),
        "files": files,
        "code": _code(settings, "ingest"),
        "libs": library_versions("pandas", "pyarrow", "dvc"),
    }


def ingest_check(result: dict[str, Any], settings: Settings) -> str | None:
    """The data repository must still hold the commit that versions the batch."""
    commit = result.get("data_commit")
    if not commit:
        return "it names no data commit"
    done = subprocess.run(
        ["git", "-C", str(settings.dvc_repo_dir), "cat-file", "-e", f"{commit}^{{commit}}"],
        capture_output=True,
    )
    if done.returncode != 0:
        return f"the data repository {settings.dvc_repo_dir} no longer holds commit {commit[:10]}"
    return None


def validate_parts(cfg: PipelineConfig, data: dict[str, Any], settings: Settings) -> dict | None:
    from mlplatform.stages.validate import suite_path

    if not data.get("data_version"):
        return None
    return {
        "data_version": data["data_version"],
        "validation": _section(cfg.validation),
        "suite_sha256": file_digest(suite_path(settings, cfg.validation.suite)),
        # the platform's own expectations read these (platform_expectations)
        "columns": [
            cfg.source.entity,
            cfg.source.timestamp,
            cfg.features.label,
            cfg.features.numeric,
        ],
        "code": _code(settings, "validate"),
        "libs": library_versions("great-expectations", "pandas"),
    }


def feast_state(cfg: PipelineConfig, settings: Settings) -> dict[str, Any]:
    """The pipeline's feature store as the features stage leaves it: the offline batch files
    (name, size, mtime), the apply record and the ledger (sha256), the registry and the SQLite
    online store (present or not). Any landing, supersession, apply, materialization or reset
    changes it."""
    from mlplatform.stages.features import feast_root
    from mlplatform.stages.materialize import APPLIED_FILE, LEDGER_FILE

    root = feast_root(cfg.name, settings)
    state: dict[str, Any] = {
        "offline": directory_state(root / "offline", "*.parquet"),
        "applied": file_digest(root / APPLIED_FILE),
        "ledger": file_digest(root / LEDGER_FILE),
        "registry": (root / "registry.db").exists(),
    }
    if settings.feast_online_store != "redis":
        state["online_db"] = (root / "online.db").exists()
    return state


def _feature_inputs(cfg: PipelineConfig, settings: Settings) -> dict[str, Any]:
    return {
        "features": _section(cfg.features),
        "source": _section(cfg.source, "uri", "query"),
        "online_store": settings.feast_online_store,
        "libs": library_versions("feast", "pandas", "pyarrow"),
    }


def features_parts(cfg: PipelineConfig, data: dict[str, Any], settings: Settings) -> dict | None:
    if not data.get("data_version"):
        return None
    return {
        "data_version": data["data_version"],
        **_feature_inputs(cfg, settings),
        "code": _code(settings, "features"),
    }


def training_set_parts(
    cfg: PipelineConfig, data: dict[str, Any], settings: Settings
) -> dict | None:
    if not data.get("data_version"):
        return None
    return {
        "data_version": data["data_version"],
        **_feature_inputs(cfg, settings),
        "window_days": cfg.retrain.window_days,
        "feast_state": feast_state(cfg, settings),
        "code": _code(settings, "training_set"),
    }


# ------------------------------------------------------------------------------ model stages


def training_data(training_set: Any, *parts: str) -> dict[str, str | None] | None:
    """sha256 of the training set's files (``train_uri``, ``holdout_uri``) by XCom key: what a
    model is trained and judged on, whichever run wrote the files. None when the XCom has no
    such URIs."""
    if not isinstance(training_set, dict) or not all(training_set.get(p) for p in parts):
        return None
    return {p: file_digest(to_path(str(training_set[p]))) for p in parts}


def train_parts(cfg: PipelineConfig, training_set: Any, settings: Settings) -> dict | None:
    from mlplatform.lineage import trainer_code_hash

    data = training_data(training_set, "train_uri", "holdout_uri")
    if data is None:
        return None
    return {
        "training_data": data,
        "model": _section(cfg.model),
        "training": _section(cfg.training),
        "features": _section(cfg.features),
        "trainer_code_hash": trainer_code_hash(settings.repo_root),
        "libs": library_versions("tensorflow", "keras", "horovod"),
    }


def train_check(result: dict[str, Any], settings: Settings) -> str | None:
    """The MLflow run must exist, be active and FINISHED, and its logged model must exist."""
    from mlflow.exceptions import MlflowException

    from mlplatform.stages.registry import client

    run_id = result.get("mlflow_run_id")
    if not run_id:
        return "it names no MLflow run"
    c = client(settings)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        return f"MLflow run {run_id} no longer exists"
    if run.info.lifecycle_stage != "active" or run.info.status != "FINISHED":
        return f"MLflow run {run_id} is {run.info.lifecycle_stage}/{run.info.status}"
    model_uri = str(result.get("model_uri") or "")
    if model_uri.startswith("models:/") and "/" not in model_uri[len("models:/") :]:
        try:
            c.get_logged_model(model_uri[len("models:/") :])
        except MlflowException:
            return f"its logged model {model_uri} no longer exists"
    return None


def register_parts(cfg: PipelineConfig, trained: Any, settings: Settings) -> dict | None:
    upstream = upstream_key(trained)
    if upstream is None:
        return None
    return {
        "train": upstream,
        "model_name": cfg.serving.model_name,
        "code": _code(settings, "register"),
    }


def register_check(result: dict[str, Any], settings: Settings) -> str | None:
    """The model version must exist and come from the recorded training run."""
    from mlflow.exceptions import MlflowException

    from mlplatform.stages.registry import client

    name, version = result.get("model_name"), result.get("model_version")
    try:
        mv = client(settings).get_model_version(str(name), str(version))
    except MlflowException:
        return f"model version {name} v{version} no longer exists"
    if mv.run_id != result.get("mlflow_run_id"):
        return f"{name} v{version} now comes from MLflow run {mv.run_id}"
    return None


def gate_parts(
    cfg: PipelineConfig, registered: Any, training_set: Any, settings: Settings
) -> dict | None:
    from mlplatform.stages.registry import CHAMPION, alias_version

    reg, holdout = upstream_key(registered), training_data(training_set, "holdout_uri")
    if reg is None or holdout is None:
        return None
    champion = alias_version(settings, cfg.serving.model_name, CHAMPION)
    if champion == int(registered["model_version"]):
        champion = None  # the gate compares nothing with itself: the floor alone (as gate() does)
    return {
        "registered": reg,
        "holdout": holdout,
        "gate": _section(cfg.gate),
        "features": _section(cfg.features),
        "model_kind": cfg.model.kind,
        "champion": champion,
        "code": _code(settings, "gate"),
        "libs": library_versions("tensorflow"),
    }


def infra_validate_parts(
    cfg: PipelineConfig, registered: Any, training_set: Any, settings: Settings
) -> dict | None:
    reg, holdout = upstream_key(registered), training_data(training_set, "holdout_uri")
    if reg is None or holdout is None:
        return None
    return {
        "registered": reg,
        "holdout": holdout,
        "serving": _section(cfg.serving),
        "features": _section(cfg.features),
        "code": _code(settings, "infra_validate"),
        "libs": library_versions("tensorflow"),
    }


def promote_parts(cfg: PipelineConfig, validated: Any, settings: Settings) -> dict | None:
    upstream = upstream_key(validated)
    if upstream is None:
        return None
    return {
        "validated": upstream,
        "model_name": cfg.serving.model_name,
        "canary": cfg.serving.canary,
        "code": _code(settings, "promote"),
    }


def promote_check(cfg: PipelineConfig, result: dict[str, Any], settings: Settings) -> str | None:
    """The version must still be published, labelled and aliased as the promotion left it
    (a rollback or a newer promotion since makes promotion due again)."""
    from mlplatform.stages.registry import CHAMPION, alias_version
    from serving import layout

    name, version = cfg.serving.model_name, int(result["version"])
    label, alias = ("canary", "canary") if cfg.serving.canary else ("stable", CHAMPION)
    if version not in layout.list_versions(settings.models_dir, name):
        return f"{name} v{version} is no longer published in {settings.models_dir}"
    labels = layout.read_models_config(settings.models_dir).get(name, {}).get("labels", {})
    if labels.get(label) != version:
        return f"label {label} of {name} is now on version {labels.get(label)}, not {version}"
    aliased = alias_version(settings, name, alias)
    if aliased != version:
        return f"alias {alias} of {name} is now on version {aliased}, not {version}"
    return None
