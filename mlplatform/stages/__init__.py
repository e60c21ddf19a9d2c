"""Each pipeline stage's logic as plain functions (no Airflow): spec in, URIs and metrics out.

A stage raises :class:`StageError` (or a subclass) with one readable line when the user must act;
:class:`GateRefused` and :class:`NothingToDo` are decisions, not crashes: the task ends skipped
with the reason.

Whether a failed task is retried follows :mod:`mlplatform.errors`: a :class:`StageError` is
permanent (the user must change the config or the data), a :class:`StageUnavailable` transient.
"""

from mlplatform.errors import PermanentError, TransientError


class StageError(PermanentError):
    """A stage failed for a reason the user can fix; ``str()`` is one line saying what and where.
    Never retried: the same inputs fail the same way."""


class StageUnavailable(StageError, TransientError):
    """A stage could not reach what it needs (an endpoint, a database, a pod that was lost); a
    retry may pass. Still a :class:`StageError` for callers that catch those."""


class ValidationFailed(StageError):
    """Great Expectations rejected the batch; it is quarantined and training does not run."""


class StageSkipped(StageError):
    """A decision not to act (a refused gate, too few rows to judge): the task is skipped with
    the reason, never failed."""


class GateRefused(StageSkipped):
    """The challenger did not pass the evaluation gate; nothing is promoted.

    ``figures`` holds what the decision was made on (metric, challenger and champion versions and
    values, threshold), for the ``gate_refused`` alert.
    """

    def __init__(self, message: str, figures: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.figures: dict[str, object] = dict(figures or {})


class NothingToDo(StageSkipped):
    """Nothing for this run to do (no batch landed in the interval, no retrain due): the task is
    skipped with the reason, and so is the rest of the run."""
