"""The docs of a pipeline's training DAG, generated from its config, for the people who use it.

Airflow shows a DAG's ``doc_md`` on the DAG's page. The training DAG's is written for those who
trigger and watch it, not for platform developers: what the model predicts, the data contract
(columns, the expectation suite, the ``data_uri`` format), when it retrains, the gate's
thresholds, where the artifacts are, and how to roll back. Everything comes from the pipeline's
config and the platform's settings, so the docs change when the config does.
"""

from __future__ import annotations

from mlplatform.config import PipelineConfig
from mlplatform.settings import Settings

_KIND = {
    "tabular_classifier": "a probability (`score`, 0..1) that **{label}** is true",
    "tabular_regressor": "the value of **{label}** (`prediction`)",
}


def _list(items: list[str]) -> str:
    return ", ".join(f"`{item}`" for item in items) or "none"


def _retrain(cfg: PipelineConfig) -> str:
    when = []
    if cfg.retrain.schedule:
        when.append(f"on the schedule `{cfg.retrain.schedule}`")
    if cfg.retrain.on_new_data and cfg.source.uri:
        when.append(f"when `mlp_{cfg.name}_ingest` validates a new batch")
    if cfg.retrain.on_drift:
        when.append(f"when `mlp_{cfg.name}_monitor` finds drift")
    if not when:
        return "Only when triggered by hand."
    return (
        f"Automatically {', or '.join(when)}; the `decide` task retrains or skips with the "
        f"reason (it becomes the run's note), at most once per {cfg.monitoring.cooldown_hours:g} h "
        "unless triggered by hand."
    )


def train_dag_doc(cfg: PipelineConfig, settings: Settings) -> str:
    """The Markdown ``doc_md`` of ``mlp_<name>_train`` (see the module doc)."""
    g, f, s = cfg.gate, cfg.features, cfg.source
    direction = "at least" if g.higher_is_better else "at most"
    regression = "drop" if g.higher_is_better else "rise"
    bound = "" if g.threshold is None else f"is {direction} {g.threshold} and "
    predicts = _KIND[cfg.model.kind].format(label=f.label)
    columns = [s.entity, s.timestamp, *f.numeric, *f.categorical, f.label]
    storage = f"{settings.storage}/{cfg.name}/<run>/<stage>/"
    return f"""### {cfg.name}: {cfg.description or "a model of the ML platform"}

**What it predicts**: for each `{s.entity}`, {predicts}. Served as model
**`{cfg.serving.model_name}`** (TF Serving REST/gRPC API); MLflow registered model of the same name.

**Trigger a run**: *Trigger* with `data_uri` = one batch to ingest: a {s.format.upper()} file,
a glob (`/data/{cfg.name}/2026-11-*.{s.format}`), `s3://bucket/key`, or `sql+<SQLAlchemy URL>`
with a query. Empty `data_uri`: no new data, the model is trained on the validated history.
From a shell: `mlplatform run {cfg.name} --data <uri>`.

**Data contract**: columns {_list(columns)} (entity `{s.entity}`, event time `{s.timestamp}`,
label `{f.label}`; numeric {_list(f.numeric)}; categorical {_list(f.categorical)}). Every batch is
checked against the expectation suite `{cfg.validation.suite}`; a batch that fails stops the run
before training, is kept in quarantine with its report, and the validate task's **GX Data Docs**
link says which expectations failed. At least {f.min_rows} rows are needed to train; the newest
{f.holdout_fraction:.0%} by `{s.timestamp}` is the hold-out the gate judges on.

**When it retrains**: {_retrain(cfg)}

**The gate**: the new model (alias `challenger`) replaces the served one (alias `champion`) only
if its `{g.metric}` on the hold-out {bound}does not {regression} by more than
{g.max_regression} against the champion, overall and per slice. A refusal ends the run with the
`gate` task *skipped* and the figures in its log; nothing changes for the served model.

**Where things are**: run outputs `{storage}`; model versions in MLflow
(`{settings.mlflow_ui_url}`, model `{cfg.serving.model_name}`); served versions
`{settings.models_dir}/{cfg.serving.model_name}/<version>/`; models, gate figures, lineage and the
audit trail in the **ML platform** view of this UI (`/mlplatform/models/{cfg.serving.model_name}`).

**Roll back**: the platform view's *Roll back* form, or trigger `mlp_{cfg.name}_rollback` (empty
`to_version` = the previous version), or `mlplatform rollback {cfg.serving.model_name}`.

Pipeline file `pipelines/{cfg.name}.yaml`; owner `{cfg.owner}`.
"""
