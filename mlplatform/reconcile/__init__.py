"""Reconcile what serves with what is recorded: MLflow, ``models.config``, the model base, a server.

Four records say which model serves, and after a lost database, a hand-edited config or a
corrupted file they can disagree:

* the MLflow registry: model versions, alias ``champion``, tag ``content_sha256``;
* ``models.config``: label ``stable`` (:func:`serving.layout.configured_version`);
* the model base: ``<model>/<version>/`` and the digest recorded at publishing;
* a running server: what ``GET /v1/mlplatform/status`` (or TF Serving's metadata) answers.

:func:`inspect_model` reads them into a :class:`ModelSnapshot`; :func:`findings` lists each
disagreement as a :class:`Finding` (one line, and what ``doctor --repair`` would do);
:func:`repair` applies the safe fixes: re-register the model base's versions into a lost, reset or
lagging registry so that version numbers line up again (a reset registry is renamed aside first,
nothing deleted), rewrite ``models.config`` from the champion alias when that version is intact,
move the champion alias to what ``models.config`` serves, and backfill missing digest tags. A
version whose files no longer match their digest is reported, never "repaired".
:func:`wait_until_served` polls a server until it serves a version (``mlplatform rollback``).

No TensorFlow here; MLflow is imported when the registry is read.
"""

from mlplatform.reconcile.inspect import wait_until_served
from mlplatform.reconcile.records import ReconcileError
from mlplatform.reconcile.report import doctor_report, status_report

__all__ = ["ReconcileError", "doctor_report", "status_report", "wait_until_served"]
