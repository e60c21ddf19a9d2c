"""Monitoring of served models (importable without Airflow; Evidently loads inside functions).

* :mod:`~mlplatform.monitoring.check`: one check of a pipeline (``run_check``): drift of the
  request log and the newest validated batch against the champion's training set, and the live
  metric on delayed labels; what the monitor DAG's ``drift_check`` task runs.
* :mod:`~mlplatform.monitoring.drift`: Evidently's drift per feature and its offline HTML report.
* :mod:`~mlplatform.monitoring.requests`: the server's request log as rows.
* :mod:`~mlplatform.monitoring.labels`: the delayed-label store and the label join.
* :mod:`~mlplatform.monitoring.champion`: the champion version and the MLflow figures.
* :mod:`~mlplatform.monitoring.state`: the window of the last check and its result.
"""
