"""Conversions between the wire formats and arrays, one of each: JSON bodies
(:mod:`~serving.codec.json_body`, :mod:`~serving.codec.json_tensors`), ``tf.Example``
(:mod:`~serving.codec.examples`), ``TensorProto`` (:mod:`~serving.codec.tensor_proto`) and the
one base64 rule (:mod:`~serving.codec.b64`).

Depends only on :mod:`serving.api`; imports numpy, and TensorFlow's protos only inside the
functions that build or read them.
"""
