"""Clients for TF Serving's APIs (this package's server or a real TF Serving): REST
(:class:`PredictionClient`) and gRPC (:class:`GrpcPredictionClient`), with one result type.

Contract:

* ``PredictionClient(base_url).predict(model, instances)`` POSTs the row format to
  ``/v1/models/<model>[/versions/<v>|/labels/<l>]:predict``; ``classify`` / ``regress``
  POST ``{"examples", "context"?}`` to ``:classify`` / ``:regress``. All return a
  :class:`PredictResult`. ``model_version`` comes from the ``X-Model-Version`` response
  header (set by :mod:`serving.server`); against a real TF Serving, which does not send
  it, it is the explicitly requested ``version`` or None.
* ``GrpcPredictionClient(target)`` (``"host:8500"``) has the same methods over
  ``tensorflow.serving.PredictionService`` / ``ModelService``, using only
  tensorflow-serving-api's stubs and protos, so it works unchanged against a real
  TF Serving; ``model_version`` is the ``model_spec.version`` of the response.
* Both: ``model_status`` (the ``model_version_status`` list, as REST JSON),
  ``model_metadata`` (the REST metadata JSON), ``wait_until_available``.
* Any failed request raises :class:`ServingError` whose message is one line (the server's
  error text when it sent one); ``status_code`` is the HTTP status (REST) and ``code``
  the canonical status name (``"NOT_FOUND"``, ``"INVALID_ARGUMENT"``, ...; for REST
  derived from the HTTP status), both None for transport failures over REST.

Importing this module does not import TensorFlow or gRPC. Constructing a
:class:`GrpcPredictionClient` does: tensorflow-serving-api's generated protos import
``tensorflow.core.*``, which loads the TensorFlow package (seconds, once per process).
"""

from serving.client.common import PredictResult, ServingError
from serving.client.grpc import GrpcPredictionClient
from serving.client.rest import PredictionClient

__all__ = ["GrpcPredictionClient", "PredictResult", "PredictionClient", "ServingError"]
