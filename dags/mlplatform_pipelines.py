"""DAG factory: per ``pipelines/*.yaml``, a training DAG ``mlp_<name>_train`` and a manual
rollback DAG ``mlp_<name>_rollback``; per pipeline file that is not valid, a placeholder DAG
``mlp_<file stem>_invalid`` (tag ``invalid``) whose description is the error line.

Onboarding a model needs no Airflow code: drop a validated pipeline YAML into ``pipelines/`` and
this file builds its DAGs on the next parse (see :mod:`mlplatform.dag_factory`). Parsing stays
fast: only the Airflow SDK, pydantic and the operators' thin modules are imported.
"""

from __future__ import annotations

from mlplatform.dag_factory import build_all
from mlplatform.settings import get_settings

globals().update(build_all(get_settings().pipelines_dir))
