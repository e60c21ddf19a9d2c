"""Extra links shown on task instances in the Airflow UI: GX Data Docs, drift report, MLflow run
and model.

Each operator pushes the URL under the link's XCom key while it runs; the link reads it back.
Registered for the UI by ``plugins/mlplatform_plugin.py``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink

REPORTS_PREFIX = "/mlplatform"  # where plugins/mlplatform_plugin.py mounts its report server


class _XComLink(BaseOperatorLink):
    xcom_key = ""

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        # Airflow 3 resolves links in the task process at its end (the SDK's XCom; the API
        # server reads the stored result); the core XCom there logs a DeprecatedImportWarning
        # into every linked task's log
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=self.xcom_key) or ""


class DataDocsLink(_XComLink):
    name = "GX Data Docs"
    xcom_key = "data_docs_url"

    @staticmethod
    def url(settings: Any, index_file: Any) -> str:
        """The Airflow-served URL of a Data Docs ``index.html`` under the platform storage."""
        from mlplatform.storage import to_path

        relative = to_path(str(index_file)).relative_to(to_path(settings.storage))
        return f"{REPORTS_PREFIX}/reports/{relative.as_posix()}"


class DriftReportLink(_XComLink):
    name = "Drift report"
    xcom_key = "drift_report_url"

    @staticmethod
    def url(settings: Any, report_file: Any) -> str:
        """The Airflow-served URL of an Evidently report (``.../drift/reports/drift.html``)."""
        return DataDocsLink.url(settings, report_file)


class MlflowRunLink(_XComLink):
    name = "MLflow run"
    xcom_key = "mlflow_run_url"

    @staticmethod
    def url(settings: Any, experiment: str, run_id: str | None) -> str:
        from mlflow import MlflowClient

        if not run_id:
            return ""
        exp = MlflowClient(settings.tracking_uri).get_run(run_id).info.experiment_id
        return f"{settings.mlflow_ui_url}/#/experiments/{exp}/runs/{run_id}"


class MlflowModelLink(_XComLink):
    name = "MLflow model version"
    xcom_key = "mlflow_model_url"

    @staticmethod
    def url(settings: Any, model_name: str, version: int) -> str:
        return f"{settings.mlflow_ui_url}/#/models/{model_name}/versions/{version}"
