"""Registry operators: register (alias challenger), gate vs champion, promote to serving."""

from __future__ import annotations

from typing import Any

from operators.base import PlatformOperator
from operators.links import MlflowModelLink


class RegisterOperator(PlatformOperator):
    """Register the trained model (``trained``: train's XCom) as a version with alias challenger."""

    stage = "register"
    template_fields = ("trained",)
    operator_extra_links = (MlflowModelLink(),)
    ui_color = "#fbeaea"

    def __init__(self, *, trained: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trained = trained

    def run_stage(self, cfg, out_dir, settings, context):
        from mlplatform.stages.registry import register

        t = self.trained
        result = register(cfg, t["model_uri"], t["mlflow_run_id"], t.get("tags", {}), settings)
        context["ti"].xcom_push(key=MlflowModelLink.xcom_key, value=MlflowModelLink.url(settings, result["model_name"], result["model_version"]))
        return result


class GateOperator(PlatformOperator):
    """Compare challenger (``registered``) with champion on the hold-out (``training_set``).

    A refusal skips this task and everything downstream, with the reason in the task log.
    """

    stage = "gate"
    template_fields = ("registered", "training_set")
    ui_color = "#fbeaea"

    def __init__(self, *, registered: Any, training_set: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registered = registered
        self.training_set = training_set

    def run_stage(self, cfg, out_dir, settings, context):
        from mlplatform.stages.registry import gate

        return gate(cfg, int(self.registered["model_version"]), self.training_set["holdout_uri"], settings)


class PromoteOperator(PlatformOperator):
    """Publish the gated version to the TF Serving model base and move alias champion."""

    stage = "promote"
    template_fields = ("registered",)
    ui_color = "#e3f6f5"

    def __init__(self, *, registered: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registered = registered

    def run_stage(self, cfg, out_dir, settings, context):
        from mlplatform.stages.registry import promote

        return promote(cfg, int(self.registered["model_version"]), settings)
