"""The batch scoring DAG of a pipeline: ``mlp_<name>_score``.

One task, ``score`` (:class:`operators.score.ScoreOperator`), scores a table or every entity's
latest offline features with the champion and writes ``predictions.parquet`` (see
:mod:`mlplatform.stages.score`). Scheduled by ``scoring.schedule`` (null, the default: manual
runs only, from the UI or ``mlplatform score NAME``); param ``input_uri`` overrides
``scoring.input_uri`` for one run (empty: the config's, else the offline features).

Airflow is imported inside the function, like :mod:`mlplatform.dag_factory`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlplatform.config import PipelineConfig

if TYPE_CHECKING:
    from airflow.sdk import DAG

SCORE_DAG_DOC = """Batch scoring DAG of a pipeline config (``pipelines/<name>.yaml``, section ``scoring``).

``score`` loads the champion of ``serving.model_name``, reads the input in chunks of
``scoring.chunk_rows`` rows (param ``input_uri``, else ``scoring.input_uri``, else every entity's
latest row of the offline feature store), and writes
``<storage>/<pipeline>/<run>/score/predictions.parquet`` (entity, event time, prediction(s),
model_version, data_version, input_version, scored_at). The scored rows are appended to the
request log (protocol ``batch``) so that the drift monitor sees them.

Trigger it from the UI or ``mlplatform score NAME [--data URI]``.
"""


def score_dag_id(pipeline: str) -> str:
    return f"mlp_{pipeline}_score"


def build_score_dag(cfg: PipelineConfig) -> DAG:
    """The scoring DAG of one pipeline (see the module doc)."""
    from airflow.sdk import Param

    from mlplatform.dag_factory import dag_default_args, pipeline_dag
    from operators.score import ScoreOperator

    with pipeline_dag(
        cfg,
        "score",
        description=f"score with the champion of {cfg.serving.model_name} in batch",
        schedule=cfg.scoring.schedule,
        max_active_runs=1,
        params={
            "input_uri": Param(
                cfg.scoring.input_uri or "",
                type="string",
                description="table to score (path, glob, s3://, sql+...); "
                "empty: every entity's latest offline features",
            )
        },
        # no retry: bad input or a missing champion stay so; re-trigger (or wait for the schedule)
        default_args=dag_default_args(cfg, retries=0),
        doc_md=SCORE_DAG_DOC,
    ) as dag:
        ScoreOperator(input_uri="{{ params.input_uri }}")
    return dag
