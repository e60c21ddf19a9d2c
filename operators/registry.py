"""Registry operators: register (alias challenger), gate vs champion, promote to serving."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mlplatform.contracts import (
    GateOutput,
    InfraValidateOutput,
    RegisterOutput,
    TrainingSetOutput,
    TrainOutput,
)
from mlplatform.stages import StageError
from operators.base import PlatformOperator
from operators.links import MlflowModelLink

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig
    from mlplatform.settings import Settings


class RegisterOperator(PlatformOperator):
    """Register the trained model (``trained``: train's XCom) as a version with alias challenger."""

    stage = "register"
    trained: TrainOutput  # its XCom, rendered when the task runs
    template_fields = ("trained",)
    operator_extra_links = (MlflowModelLink(),)
    ui_color = "#fbeaea"

    def __init__(self, *, trained: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trained = trained

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform.airflow_runner import ui_url
        from mlplatform.platform_view import ui_links
        from mlplatform.stages.registry import client, register

        t = self.trained
        model_uri, mlflow_run_id = t.get("model_uri"), t.get("mlflow_run_id")
        if not model_uri or not mlflow_run_id:
            raise StageError(f"register: the train task's output names no model ({t!r})")
        result = register(cfg, model_uri, mlflow_run_id, t.get("tags", {}), settings)
        version = int(result["model_version"])
        links = ui_links(settings, cfg, version, context["run_id"], t.get("tags", {}), ui_url())
        for key, url in links.items():  # MLflow links back to the Airflow UI (http, not file://)
            client(settings).set_model_version_tag(result["model_name"], str(version), key, url)
        mlflow_url = MlflowModelLink.url(settings, result["model_name"], result["model_version"])
        context["ti"].xcom_push(key=MlflowModelLink.xcom_key, value=mlflow_url)
        self.log.info("MLflow model version: %s", mlflow_url)
        self.log.info("in the platform view: %s", links["platform_url"])
        return result

    def cache_parts(self, cfg, settings, context):
        from mlplatform.cache_keys import register_parts

        return register_parts(cfg, self.trained, settings)

    def cache_check(self, cfg, settings, result):
        from mlplatform.cache_keys import register_check

        return register_check(result, settings)

    def on_cache_hit(self, cfg, settings, result, context):
        """The reused version becomes the challenger again, as a registration makes it."""
        from mlplatform.stages.registry import CHALLENGER, client

        name, version = result["model_name"], result["model_version"]
        client(settings).set_registered_model_alias(name, CHALLENGER, str(version))
        context["ti"].xcom_push(
            key=MlflowModelLink.xcom_key, value=MlflowModelLink.url(settings, name, version)
        )


def gate_decision_line(result: GateOutput) -> str:
    """``promote v2: auc 0.8311 vs champion v1 0.8290 on 800 hold-out rows`` (``champion
    none`` for a first model; ``(cached from run R)`` for a reused decision)."""
    champion = (
        f"champion v{result['champion_version']} {result['champion']}"
        if result.get("champion") is not None
        else "champion none"
    )
    line = (
        f"{result.get('decision', 'promote')} v{result['challenger_version']}: "
        f"{result['metric']} {result['challenger']} vs {champion} "
        f"on {result['holdout_rows']} hold-out rows"
    )
    cached = cast("dict[str, Any]", result).get("cached_from")
    return line + (f" (cached from run {cached})" if cached else "")


class _ChallengerOperator(PlatformOperator):
    """A stage judging the registered challenger (``registered``: register's XCom) on the
    hold-out of its training set (``training_set``: training_set's XCom)."""

    registered: RegisterOutput  # their XComs, rendered when the task runs
    training_set: TrainingSetOutput
    template_fields = ("registered", "training_set")

    def __init__(self, *, registered: Any, training_set: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registered = registered
        self.training_set = training_set

    @property
    def challenger(self) -> tuple[int, str]:
        """``(model version, hold-out URI)``."""
        return int(self.registered["model_version"]), self.training_set["holdout_uri"]


class GateOperator(_ChallengerOperator):
    """Compare challenger (``registered``) with champion on the hold-out (``training_set``).

    A refusal skips this task and everything downstream, with the reason in the task log, and
    is sent as alert ``gate_refused`` (figures, run, log link).
    """

    stage = "gate"
    imports_tensorflow = True
    ui_color = "#fbeaea"

    def execute(self, context: Any) -> dict[str, Any]:
        """The stage (:meth:`PlatformOperator.execute`); the task's last line of its own states
        the decision: ``gate decision: promote ...`` or ``gate decision: refused ...``."""
        from airflow.sdk.exceptions import AirflowSkipException

        try:
            result = super().execute(context)
        except AirflowSkipException as exc:
            self.log.info("gate decision: refused: %s", exc)
            raise
        self.log.info("gate decision: %s", gate_decision_line(cast("GateOutput", result)))
        return result

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform.stages.registry import gate
        from operators.notifiers import run_facts

        version, holdout_uri = self.challenger
        return gate(cfg, version, holdout_uri, settings, alert_fields=run_facts(context))

    def cache_parts(self, cfg, settings, context):
        from mlplatform.cache_keys import gate_parts

        return gate_parts(cfg, self.registered, self.training_set, settings)


class InfraValidateOperator(_ChallengerOperator):
    """Load the challenger in the serving runtime, replay hold-out requests, write warm-up records.

    XCom: ``candidate_dir`` (what promotion publishes), ``p50_ms``/``p99_ms``, ``warmup_file``.
    A model that does not load, answers wrongly or misses the latency budget fails the task.
    """

    stage = "infra_validate"
    imports_tensorflow = True
    ui_color = "#e3f6f5"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform.stages.infra_validate import infra_validate

        version, holdout_uri = self.challenger
        return infra_validate(cfg, version, holdout_uri, out_dir, settings)

    def cache_parts(self, cfg, settings, context):
        from mlplatform.cache_keys import infra_validate_parts

        return infra_validate_parts(cfg, self.registered, self.training_set, settings)


class PromoteOperator(PlatformOperator):
    """Publish the validated candidate (``validated``: infra_validate's XCom) to the model base.

    Labels it ``stable`` and moves alias ``champion`` (``canary`` for both with ``serving.canary``).
    """

    stage = "promote"
    validated: InfraValidateOutput  # its XCom, rendered when the task runs
    template_fields = ("validated",)
    ui_color = "#e3f6f5"

    def __init__(self, *, validated: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validated = validated

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform import audit
        from mlplatform.stages.registry import promote

        v = self.validated
        result = promote(cfg, int(v["version"]), settings, candidate_dir=v["candidate_dir"])
        # the gate's XCom (:class:`~mlplatform.contracts.GateOutput`); none if it left nothing
        gate = cast("GateOutput", context["ti"].xcom_pull(task_ids="gate") or {})
        figures = (
            f"{gate['metric']} {gate['challenger']} vs champion {gate['champion']}"
            if gate.get("metric")
            else "no gate figures"
        )
        audit.record(
            settings,
            cfg.name,
            "canary" if result["label"] == "canary" else "promote",
            actor=audit.actor_from_context(context),
            reason=f"passed the gate ({figures}) and infra validation",
            model=cfg.serving.model_name,
            version=int(v["version"]),
            run_id=context["run_id"],
            previous_version=result.get("previous_version"),
        )
        return result

    def cache_parts(self, cfg, settings, context):
        from mlplatform.cache_keys import promote_parts

        return promote_parts(cfg, self.validated, settings)

    def cache_check(self, cfg, settings, result):
        from mlplatform.cache_keys import promote_check

        return promote_check(cfg, result, settings)


class RollbackOperator(PlatformOperator):
    """Serve the previous published version again (or ``to_version``, templated) and move champion back."""

    stage = "rollback"
    template_fields = ("to_version",)
    ui_color = "#fbeaea"

    def __init__(self, *, to_version: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.to_version = to_version

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform import audit
        from mlplatform.stages.registry import rollback

        to = int(self.to_version) if self.to_version not in (None, "", "None") else None
        result = rollback(cfg.serving.model_name, settings, to)
        reason = (context.get("params") or {}).get("reason") or "no reason given"
        audit.record(
            settings,
            cfg.name,
            "rollback",
            actor=audit.actor_from_context(context),
            reason=str(reason),
            model=cfg.serving.model_name,
            version=int(str(result["served_version"])),
            run_id=context["run_id"],
            from_version=result.get("from_version"),
        )
        return result
