"""Airflow plugin of the platform: registers the operators' extra links for the UI.

Links on task instances: "GX Data Docs" (validate), "MLflow run" (train), "MLflow model version"
(register). Imports stay light: only the link classes (Airflow SDK).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from operators.links import DataDocsLink, MlflowModelLink, MlflowRunLink


class MlPlatformPlugin(AirflowPlugin):
    name = "mlplatform"
    operator_extra_links = [DataDocsLink(), MlflowRunLink(), MlflowModelLink()]
