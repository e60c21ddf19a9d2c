"""A platform home with a model's history, without training: MLflow versions with lineage tags
(real MLflow runs and model versions), published versions in the model base with a
``models.config`` (stand-in SavedModel files: nothing here loads them), gate summaries, a drift
check and audit entries. For tests of the platform view and its page load times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def run_id(version: int) -> str:
    return f"manual__2026-11-{version:02d}T10:00:00+00:00"


def build_history(home: Path, versions: int = 3, served: int | None = None) -> dict[str, Any]:
    """Versions 1..``versions`` of model ``demo`` (pipeline ``demo``): each registered with its
    lineage tags and published; ``served`` (default: the newest) is stable and champion;
    version 2's gate refused nothing, the others passed; returns the ids it made."""
    from mlplatform.settings import get_settings
    from mlplatform.stages.registry import client
    from mlplatform.storage import run_key
    from serving import layout

    settings = get_settings()
    c = client(settings)
    experiment = c.create_experiment("demo")
    c.create_registered_model("demo", tags={"pipeline": "demo"})
    stand_in = home / "stand_in_model"
    stand_in.mkdir(exist_ok=True)
    (stand_in / "saved_model.pb").write_bytes(b"not a real SavedModel")
    storage = Path(settings.storage)
    mlflow_runs = {}
    for v in range(1, versions + 1):
        airflow_run = run_id(v)
        docs = storage / "demo" / run_key(airflow_run) / "validate" / "data_docs"
        docs.mkdir(parents=True)
        (docs / "index.html").write_text(f"<html>data docs of v{v}</html>")
        run = c.create_run(experiment)
        mlflow_runs[v] = run.info.run_id
        tags = {
            "data_version": f"{v:02d}" + "ab" * 15,
            "validation": "passed",
            "data_docs": docs.joinpath("index.html").as_uri(),
            "feature_service": "demo_service",
            "airflow_run_id": airflow_run,
        }
        c.create_model_version("demo", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags)  # fmt: skip
        layout.publish_version(settings.models_dir, "demo", v, stand_in)
        gate_dir = storage / "demo" / run_key(airflow_run) / "gate"
        gate_dir.mkdir(parents=True)
        outputs: dict[str, Any] = {
            "metric": "auc",
            "challenger_version": v,
            "challenger": round(0.80 + v / 1000, 4),
            "champion_version": v - 1 or None,
            "champion": round(0.80 + (v - 1) / 1000, 4) if v > 1 else None,
            "holdout_rows": 800,
            "slices": {"region=north": 0.81, "region=south": 0.79},
            "decision": "promote",
        }
        if v == 2:
            outputs = {"skipped": "gate refused demo v2: auc=0.7000 is past the floor 0.75"}
        (gate_dir / "summary.json").write_text(
            json.dumps({"stage": "gate", "seconds": 1.0, "outputs": outputs})
        )
    served = versions if served is None else served
    layout.set_label(settings.models_dir, "demo", "stable", served)
    c.set_registered_model_alias("demo", "champion", str(served))
    c.set_registered_model_alias("demo", "challenger", str(versions))
    return {"mlflow_runs": mlflow_runs, "experiment": experiment, "served": served}
