"""The records reconciliation compares: on disk, in MLflow, on a server; and its findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

CHAMPION = "champion"
CONTENT_SHA256 = "content_sha256"
RECOVERED_FROM = "recovered_from"
STATUS_PATH = "/v1/mlplatform/status"


class ReconcileError(RuntimeError):
    """A repair step could not be completed; ``str()`` is one line."""


@dataclass(frozen=True)
class DiskVersion:
    """One published version: the digest recorded at publishing and the one its files give now.

    ``actual`` is None when the files were not hashed (a shallow inspection).
    """

    version: int
    recorded: str | None
    actual: str | None
    published_at: datetime | None
    metadata_error: str | None = None

    @property
    def intact(self) -> bool:
        """False only when the files are known to differ from their recorded digest."""
        return self.metadata_error is None and not (
            self.recorded and self.actual and self.recorded != self.actual
        )

    @property
    def digest(self) -> str | None:
        """The best-known digest of the content: recorded, else computed."""
        return self.recorded or self.actual


@dataclass(frozen=True)
class RegisteredVersion:
    """One MLflow model version (not deleted)."""

    version: int
    created: datetime
    tags: dict[str, str]
    run_id: str | None = None


@dataclass(frozen=True)
class ServerView:
    """What a server answered for one model; ``error`` says why it could not be asked."""

    url: str
    reachable: bool
    served_version: int | None = None
    labels: dict[str, int] = field(default_factory=dict)
    degraded: str | None = None
    error: str | None = None
    #: ``(index, workers)`` of the server process that answered (``--workers N``), else None
    worker: tuple[int, int] | None = None


@dataclass
class ModelSnapshot:
    """Everything the platform records about one model, read once."""

    name: str
    model_base: Path
    disk: dict[int, DiskVersion]
    config_mode: bool  # a models.config governs the model base
    config_error: str | None  # unreadable or lost
    has_entry: bool
    stable: int | None
    configured: int | None  # what the server serves by the config's rule
    registered: bool  # the registered model exists in MLflow
    registry: dict[int, RegisteredVersion]
    aliases: dict[str, int]
    server: ServerView | None = None

    @property
    def champion(self) -> int | None:
        """The version alias ``champion`` points at, if any."""
        return self.aliases.get(CHAMPION)


@dataclass(frozen=True)
class Finding:
    """One disagreement: ``problem`` and ``action`` are one line each.

    ``repairable``: ``doctor --repair`` does ``action``; otherwise ``action`` says what the user
    must do.
    """

    model: str
    kind: str
    problem: str
    action: str
    repairable: bool
    version: int | None = None  # the version a version-level finding is about

    def line(self) -> str:
        """``! <model>: <problem> -> <action>``."""
        return f"! {self.model}: {self.problem} -> {self.action}"
