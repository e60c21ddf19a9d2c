"""The platform's error classes: whether a failure is worth a second try.

Every error a stage raises for the user is one readable line that holds the root cause. What
matters to Airflow is whether retrying can help:

* :class:`PermanentError`: a retry cannot pass (a config error, data that fails to read or
  validate, a refused gate, a trainer that crashed on its input). The task fails at once,
  without retries (Airflow's ``AirflowFailException``).
* :class:`TransientError`: a second try may pass (a lost pod, an unreachable endpoint, a network
  error). The task fails with a retry (``AirflowException``), as many as the DAG allows.

An exception that is neither (a library's own error the platform did not expect) keeps Airflow's
default: it is retried, since nothing says that it cannot pass.
"""

from __future__ import annotations


class PlatformError(RuntimeError):
    """A failure the platform recognised; ``str()`` is one line saying what and where."""


class PermanentError(PlatformError):
    """Retrying cannot help: the config, the data or a decision must change first."""


class TransientError(PlatformError):
    """A second try may pass: a lost pod, an endpoint that did not answer, a network error."""


def is_transient(exc: BaseException) -> bool:
    """Whether a task that raised ``exc`` should be retried: a :class:`TransientError`, or an
    exception the platform does not know (nothing says it cannot pass); never a
    :class:`PermanentError` or a config error (``ValueError`` subclasses raised by config
    loading: :class:`mlplatform.config.ConfigError`)."""
    from mlplatform.config import ConfigError

    if isinstance(exc, TransientError):
        return True
    return not isinstance(exc, PermanentError | ConfigError)
