"""TF Serving's gRPC API over the runtime (:func:`~serving.grpc.server.start_grpc_server`).

Importing this package imports gRPC and TensorFlow (tensorflow-serving-api's protos)."""

from serving.grpc.server import GrpcServer, start_grpc_server
from serving.grpc.servicer import ModelServicer, PredictionServicer

__all__ = ["GrpcServer", "ModelServicer", "PredictionServicer", "start_grpc_server"]
