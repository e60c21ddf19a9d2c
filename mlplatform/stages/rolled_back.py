"""A rolled-back model is not promoted again by a retrain on the same inputs.

:func:`mlplatform.stages.registry.rollback` tags the version it leaves ``rolled_back=true``. A
scheduled or asset-triggered retrain on the same data with the same training config and trainer
code trains an equivalent model, which the gate would pass against the older champion it was
rolled back to, undoing the rollback without anyone deciding so. :func:`rolled_back_twin` finds
such a version; the gate refuses the challenger with the reason. New data, a changed config or
changed trainer code make a different model and are judged as usual. Versions registered before
``training_config_hash`` was tagged never match (their identity is unknown).
"""

from __future__ import annotations

from typing import Any

#: the tags that together identify what a model was trained on and how
IDENTITY_TAGS = ("data_version", "training_config_hash", "trainer_code_hash")
ROLLED_BACK_TAG = "rolled_back"


def identity(tags: dict[str, str]) -> tuple[str, ...] | None:
    """The version's training identity, or None when any part of it was not recorded."""
    values = tuple(tags.get(key) or "" for key in IDENTITY_TAGS)
    return values if all(values) else None


def rolled_back_twin(mlflow_client: Any, model_name: str, version: int) -> int | None:
    """The newest *other* version tagged ``rolled_back`` with the same training identity as
    ``version``, or None (also when ``version``'s identity is incomplete)."""
    versions = mlflow_client.search_model_versions(f"name='{model_name}'")
    tags_of = {int(mv.version): dict(mv.tags or {}) for mv in versions}
    mine = identity(tags_of.get(version, {}))
    if mine is None:
        return None
    twins = [
        v
        for v, tags in tags_of.items()
        if v != version and tags.get(ROLLED_BACK_TAG) == "true" and identity(tags) == mine
    ]
    return max(twins, default=None)
