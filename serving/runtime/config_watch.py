"""``models.config`` as the version manager reads it each poll: the last readable config is
kept when the file becomes unusable, and a lost config is never taken for "no config"."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from serving import layout

__all__ = ["ConfigWatch"]

log = logging.getLogger(__name__)


class ConfigWatch:
    """The config of ``model_base`` to apply, poll after poll.

    ``error`` is why the file is unusable now (None when readable, or in TF Serving's
    ``--model_base_path`` mode); ``seen`` whether a config ever governed the base (then the
    server never falls back to serving the newest version). Used from the poller thread only.
    """

    def __init__(self, model_base: Path) -> None:
        self.model_base = model_base
        self.error: str | None = None
        self.seen = False
        self._config: dict[str, dict[str, Any]] | None = None
        self._warned_no_config = False

    def read(self) -> dict[str, dict[str, Any]] | None:
        """The config to apply this poll: the file's, else the last readable one (with
        ``error`` set), or None in TF Serving's ``--model_base_path`` mode. Logs each change
        of state once."""
        try:
            config = layout.read_config_in_effect(self.model_base)
            error = None
            if config is None and self.seen:
                error = f"{self.model_base / layout.MODELS_CONFIG} disappeared"
        except ValueError as exc:
            config, error = None, str(exc)
        if config is not None:
            self._config, self.seen = config, True
        elif error is not None:
            self.seen = True
        elif not self._warned_no_config:
            self._warned_no_config = True
            log.warning(
                "no models.config in %s: serving the newest version of each model "
                "(TF Serving's --model_base_path mode)",
                self.model_base,
            )
        if error != self.error:
            if error is not None:
                log.error("models.config unusable, keeping the served versions: %s", error)
            else:
                log.info("models.config readable again")
            self.error = error
        return self._config if self.seen else None

    def target(
        self, name: str, config: dict[str, dict[str, Any]] | None, versions: list[int]
    ) -> tuple[int | None, str | None, dict[str, int] | None]:
        """(version to serve, why none, labels to apply or None to keep the current ones)."""
        if self.error is not None:
            return None, f"models.config unusable: {self.error}", None
        target, reason = layout.configured_version(config, name, versions)
        entry = (config or {}).get(name)
        labels = dict(entry["labels"]) if entry is not None and reason is None else None
        return target, reason, labels if config is not None else {}
