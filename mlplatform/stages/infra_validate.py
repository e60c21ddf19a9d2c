"""Infra validation: the candidate must load in the serving runtime and answer in time.

Contract: ``infra_validate(cfg, version, holdout_uri, out_dir, settings)`` downloads the registered
version's SavedModel into ``out_dir/candidate``, serves it with the runner that
``serving.infra_runner`` chooses (:mod:`mlplatform.infra_runners`: ``embedded``, the local server's
own loader and request path, or ``kubernetes``, the ``tensorflow/serving`` image in a pod asked
over gRPC), sends ``serving.warmup_requests`` predict requests built from hold-out rows, and
checks every answer: one finite output per row (scores within [0, 1] for a classifier), under
``serving.latency_budget_ms`` at p99 after the first (tracing) call. It then writes TF Serving's
warm-up file into the candidate (``assets.extra/tf_serving_warmup_requests``) and returns
``candidate_dir`` — the exact directory that promotion publishes. Any failure raises
:class:`InfraValidationFailed` with one line saying what and why; nothing is published.

``check_published_version(model_base, name, version, expected_sha256)`` is the same check for a
version already in the model base (before a rollback serves it again): its files must hash to the
digest recorded at publishing (and to ``expected_sha256``, the MLflow tag, when given), it must
load with the server's loader and answer its warm-up records, or one ``serving_default`` call.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mlplatform.config import PipelineConfig
from mlplatform.contracts import InfraValidateOutput
from mlplatform.scoring import feature_columns
from mlplatform.settings import Settings
from mlplatform.stages import StageError
from mlplatform.storage import to_path


class InfraValidationFailed(StageError):
    """The candidate does not load, answers wrongly, or is too slow."""


def _rows(cfg: PipelineConfig, df: pd.DataFrame) -> list[dict]:
    """Hold-out rows as JSON request rows; a missing value is ``null``, as a client sends it."""
    cols = df[cfg.features.all].copy()
    for c in cfg.features.categorical:
        cols[c] = cols[c].astype(object).map(lambda v: None if pd.isna(v) else str(v))
    return json.loads(cols.to_json(orient="records"))


def _warmup_columns(cfg: PipelineConfig, rows: list[dict]) -> dict[str, np.ndarray]:
    """Request rows as typed columns for a warm-up record (TensorProtos have no null: a missing
    value is NaN / ``""``, as the server maps it)."""
    return feature_columns(cfg, pd.DataFrame(rows, columns=cfg.features.all))


def check_answers(cfg: PipelineConfig, rows: list[dict], body: dict) -> None:
    """Raise :class:`InfraValidationFailed` unless ``body`` holds one valid output per row."""
    preds = body.get("predictions")
    if not isinstance(preds, list) or len(preds) != len(rows):
        raise InfraValidationFailed(
            f"infra validation: expected {len(rows)} predictions, got {str(preds)[:80]}"
        )
    values = []
    for p in preds:
        v = p[0] if isinstance(p, list) and len(p) == 1 else p
        if isinstance(v, dict) or isinstance(v, list):
            raise InfraValidationFailed(
                f"infra validation: each prediction must be one number, got {str(p)[:80]}"
            )
        values.append(float(v))
    if not all(math.isfinite(v) for v in values):
        raise InfraValidationFailed("infra validation: the model answered NaN or infinity")
    if cfg.model.kind == "tabular_classifier" and not all(0.0 <= v <= 1.0 for v in values):
        raise InfraValidationFailed("infra validation: classifier scores outside [0, 1]")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def load_in_server(name: str, version: int, path: Path, what: str = "infra validation"):
    """Load ``path`` with the server's own loader; InfraValidationFailed (one line) if it fails."""
    from serving.runtime import load_servable

    try:
        return load_servable(name, version, path)
    except Exception as exc:  # any load error blocks the version; the message says which
        raise InfraValidationFailed(
            f"{what}: {name} v{version} does not load in the server: {_first_line(exc)}"
        ) from None


def check_published_version(
    model_base: Path,
    name: str,
    version: int,
    expected_sha256: str | None = None,
    what: str = "infra validation",
) -> dict[str, object]:
    """Check that a published version can serve as it was validated (InfraValidationFailed).

    In order: the files hash to the digest recorded at publishing (legacy directories without one
    are not hashed against it) and to ``expected_sha256`` when given; the server's loader loads it;
    it answers its warm-up records, or one ``serving_default`` call without them. Returns
    ``{"sha256", "checked"}``. Changes nothing.
    """
    from serving import layout
    from serving.runtime import warmup

    try:
        actual = layout.verify_version_digest(model_base, name, version)
    except (ValueError, FileNotFoundError) as exc:
        raise InfraValidationFailed(f"{what}: {_first_line(exc)}") from None
    if expected_sha256 is not None and actual != expected_sha256:
        raise InfraValidationFailed(
            f"{what}: {name} v{version} on disk (sha256 {actual[:12]}…) is not the model MLflow "
            "recorded "
            f"for v{version} (content_sha256 {expected_sha256[:12]}…)"
        )
    path = Path(model_base) / name / str(version)
    servable = load_in_server(name, version, path, what)
    try:
        checked = warmup.check_servable(servable, path)
    except warmup.WarmupFailed as exc:
        raise InfraValidationFailed(f"{what}: {name} v{version} fails its warm-up: {exc}") from None
    return {"sha256": actual, "checked": checked}


def infra_validate(
    cfg: PipelineConfig, version: int, holdout_uri: str, out_dir: Path, settings: Settings
) -> InfraValidateOutput:
    from mlplatform.infra_runners import runner_for
    from mlplatform.stages.registry import download_saved_model
    from serving.runtime import warmup

    name, scfg = cfg.serving.model_name, cfg.serving
    candidate = out_dir / "candidate"
    try:
        src = download_saved_model(settings, name, version, out_dir / "download")
    except FileNotFoundError as exc:
        raise InfraValidationFailed(
            f"infra validation: {name} v{version} holds no SavedModel: {exc}"
        ) from None
    src.rename(candidate)

    holdout = pd.read_parquet(to_path(holdout_uri))
    rows = _rows(cfg, holdout)
    n = max(1, scfg.warmup_requests)
    batches = [rows[(i * 7) % max(1, len(rows) - 8) :][: 1 + (i % 8)] for i in range(n)]
    columns = [_warmup_columns(cfg, b) for b in batches]
    latencies = []
    runner = runner_for(cfg, settings)
    with runner.serve(cfg, version, candidate, out_dir) as served:
        first = [(rows[:1], _warmup_columns(cfg, rows[:1]))]
        for body_rows, body_columns in [*first, *zip(batches, columns, strict=True)]:
            started = time.perf_counter()  # the first call traces the graph: not timed
            body = served.predict(body_rows, body_columns)
            latencies.append((time.perf_counter() - started) * 1000)
            check_answers(cfg, body_rows, body)
        dtypes = served.input_dtypes()
    timed = np.array(latencies[1:])
    p50, p99 = float(np.percentile(timed, 50)), float(np.percentile(timed, 99))
    if p99 > scfg.latency_budget_ms:
        raise InfraValidationFailed(
            f"infra validation: {name} v{version} p99 latency {p99:.1f} ms exceeds the budget of "
            f"{scfg.latency_budget_ms} ms ({runner.kind} runner)"
        )
    warmup.write_warmup_file(candidate, name, columns, dtypes)
    return {
        "candidate_dir": str(candidate),
        "version": version,
        "requests": len(batches),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "warmup_file": str(candidate / warmup.WARMUP_RELPATH),
    }
