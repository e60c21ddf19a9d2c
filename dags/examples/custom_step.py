"""Example DAG: the platform's training chain with a step of its own (``docs/custom_dags.md``).

``mlp_<pipeline>_custom_step`` (for the pipeline :data:`PIPELINE`, the demo by default) runs the
platform operators as the factory's training DAG does and adds ``leakage_check`` between
``training_set`` and ``train``::

    start_run -> ingest -> validate -> features -> training_set -> leakage_check -> train
      -> register -> gate -> infra_validate -> promote  (end_run: teardown, always)

``leakage_check`` fails the run before training when a numeric feature follows the label almost
exactly in the training rows (|Pearson r| >= :data:`MAX_ABS_CORRELATION`): such a feature is
usually the label leaking into the inputs (a column written after the outcome), and the model
would learn it and be useless when served. It is a :class:`~operators.base.PlatformOperator`, so
it gets what every platform step gets: the run's frozen config, its stage directory and
``summary.json``, a one-line error, and skip/fail semantics from :mod:`mlplatform.stages`.

Airflow finds this file because it walks the DAGs folder recursively (``dags/examples/`` is under
``dags/``); add ``examples/`` to ``dags/.airflowignore`` to leave the examples out. The DAG
exists only while the pipeline :data:`PIPELINE` does and its DAGs build. Parsing stays light: pandas
is imported inside the check, never at the top of this file.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param

from mlplatform.config import ConfigError, PipelineConfig, find_pipeline, load_pipeline
from mlplatform.dag_factory import START_DATE, dag_default_args, train_operator_class
from mlplatform.settings import get_settings
from operators import (
    FeaturesOperator,
    GateOperator,
    InfraValidateOperator,
    IngestOperator,
    PromoteOperator,
    RegisterOperator,
    TrainingSetOperator,
    ValidateOperator,
)
from operators.base import PlatformOperator
from operators.run_control import EndRunOperator, StartRunOperator

log = logging.getLogger(__name__)

#: the pipeline (``pipelines/<name>.yaml``) this example builds its DAG for
PIPELINE = "demo"
#: a numeric feature at least this correlated with the label (absolute Pearson r) fails the check
MAX_ABS_CORRELATION = 0.98
#: this DAG's runs take the pipeline lease as ``custom__<run id>``, apart from the train DAG's
RUN_SCOPE = "custom"


def leakage_findings(
    train_uri: str, label: str, numeric: list[str], max_abs_correlation: float
) -> dict[str, Any]:
    """The label correlation of each numeric feature in the training rows at ``train_uri``
    (Parquet) and the features at or above ``max_abs_correlation``: ``{"correlations": {feature:
    r}, "leaks": [feature, ...], "rows": n}``. A constant feature or label has no correlation
    (``None``) and never leaks."""
    import pandas as pd

    from mlplatform.storage import to_path

    rows = pd.read_parquet(to_path(train_uri), columns=[*numeric, label])
    target = pd.to_numeric(rows[label], errors="coerce").astype(float)
    correlations: dict[str, float | None] = {}
    for feature in numeric:
        values = rows[feature].astype(float)
        if values.nunique() < 2 or target.nunique() < 2:  # constant: r is undefined
            correlations[feature] = None
            continue
        r = values.corr(target)
        correlations[feature] = None if pd.isna(r) else round(float(r), 4)
    leaks = [f for f, r in correlations.items() if r is not None and abs(r) >= max_abs_correlation]
    return {"correlations": correlations, "leaks": leaks, "rows": len(rows)}


class LeakageCheckOperator(PlatformOperator):
    """Fail before training when a numeric feature is (almost) the label (see the module doc).

    ``training_set``: the training_set task's XCom (``train_uri``). XCom: ``correlations``
    (feature -> Pearson r with the label), ``leaks`` (empty: passed), ``rows``.
    """

    stage = "leakage_check"
    template_fields = ("training_set",)
    ui_color = "#fdf2e3"

    def __init__(
        self,
        *,
        training_set: Any,
        max_abs_correlation: float = MAX_ABS_CORRELATION,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("retries", 0)  # the same data fails the same way: never retry
        super().__init__(**kwargs)
        self.training_set = training_set
        self.max_abs_correlation = max_abs_correlation

    def run_stage(self, cfg, out_dir, settings, context):
        from mlplatform.stages import ValidationFailed

        found = leakage_findings(
            self.training_set["train_uri"],
            cfg.features.label,
            cfg.features.numeric,
            self.max_abs_correlation,
        )
        if found["leaks"]:
            shown = ", ".join(f"{f} (r={found['correlations'][f]})" for f in found["leaks"])
            raise ValidationFailed(
                f"leakage_check: feature(s) {shown} follow label {cfg.features.label!r} almost "
                f"exactly (|r| >= {self.max_abs_correlation}) in {found['rows']} training rows; "
                "hint: drop the column from features or fix how it is produced"
            )
        return found


def build_custom_step_dag(cfg: PipelineConfig) -> DAG:
    """The example DAG for pipeline ``cfg`` (see the module doc)."""
    with DAG(
        dag_id=f"mlp_{cfg.name}_custom_step",
        description=f"train {cfg.name} with a leakage check before training (example)",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["mlplatform", "example", cfg.name],
        params={
            "data_uri": Param(
                "",
                type="string",
                description="raw batch to ingest; empty: train on the validated history",
            ),
            "cache": Param(True, type="boolean", description="reuse unchanged stages' outputs"),
        },
        # pipeline, failure alerts and the run scope reach every operator through default_args
        default_args=dag_default_args(
            cfg, run_scope=RUN_SCOPE, retries=1, retry_delay=timedelta(seconds=30)
        ),
        doc_md=__doc__,
    ) as dag:
        start = StartRunOperator()
        ingest = IngestOperator()
        validate = ValidateOperator(data=ingest.output)
        features = FeaturesOperator(data=ingest.output)
        training_set = TrainingSetOperator(data=ingest.output)
        check = LeakageCheckOperator(training_set=training_set.output)
        # the backend's train operator (MLP_TRAINING_BACKEND: local horovodrun or Kubernetes)
        train = train_operator_class()(
            training_set=training_set.output,
            lineage=[ingest.output, validate.output, features.output],
        )
        registered = RegisterOperator(trained=train.output)
        gate = GateOperator(registered=registered.output, training_set=training_set.output)
        infra = InfraValidateOperator(
            registered=registered.output, training_set=training_set.output
        )
        promote = PromoteOperator(validated=infra.output)
        # XComs make most edges (ingest -> validate ...); these are the ordering-only ones
        start >> ingest
        validate >> features >> training_set
        check >> train
        gate >> infra
        promote >> EndRunOperator().as_teardown(setups=start)
    return dag


def example_pipeline(name: str = PIPELINE) -> PipelineConfig | None:
    """The pipeline config ``name`` from the pipelines folder, or None when there is none or it
    is not valid (the factory's placeholder DAG already reports an invalid file)."""
    try:
        return load_pipeline(find_pipeline(name, get_settings().pipelines_dir))
    except ConfigError:
        return None


def example_dag(name: str = PIPELINE) -> DAG | None:
    """This example's DAG for pipeline ``name``, or None (logged) when the pipeline is absent or
    its DAGs cannot be built: the factory's placeholder ``mlp_<name>_invalid`` shows why, and
    this file must not become an import error of its own."""
    cfg = example_pipeline(name)
    if cfg is None:
        return None
    try:
        return build_custom_step_dag(cfg)
    except Exception as exc:  # noqa: BLE001 - whatever fails here fails the factory's DAGs too
        log.warning("example DAG for %s not built: %s: %s", name, type(exc).__name__, exc)
        return None


custom_step_dag = example_dag()
