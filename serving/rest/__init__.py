"""TF Serving's REST API over the runtime (:func:`~serving.rest.app.build_rest_app`)."""

from serving.rest.app import build_rest_app

__all__ = ["build_rest_app"]
