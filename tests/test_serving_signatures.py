"""The server's signature call (:class:`serving.runtime.signatures.SignatureFunction`): the
flat form of the concrete function, taken for a SavedModel's keyword-only tensor signature,
answers exactly what ``fn(**tensors)`` answers; tensors that do not fit go through
``fn(**tensors)`` and get TensorFlow's own error, a 400."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serving.api import ApiError  # noqa: E402
from tests.saved_models import build_scorer, expected_score  # noqa: E402


@pytest.fixture(scope="module")
def servable(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from serving.runtime import load_servable

    path = build_scorer(tmp_path_factory.mktemp("signatures") / "scorer", 1.5, multi=True)
    return load_servable("scorer", 1, Path(path))


def test_flat_call_answers_what_the_concrete_function_answers(
    servable: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow as tf

    fn = servable.signatures["serving_default"]
    assert fn._plan is not None, "a SavedModel signature should take the flat path"
    assert [name for name, _dtype, _dims in fn._plan] == ["c", "x"]
    tensors = {
        "x": tf.constant(np.array([0.5, -2.0, 3.0], np.float32)),
        "c": tf.constant(np.array([b"a", b"neg", b"b"], dtype=object)),
    }
    flat_calls: list[int] = []
    original = type(fn.fn)._call_flat

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        flat_calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(fn.fn), "_call_flat", counting)
    fast = fn(**tensors)
    monkeypatch.setattr(type(fn.fn), "_call_flat", original)
    reference = fn.fn(**tensors)
    assert flat_calls, "SignatureFunction did not take the flat call"
    assert set(fast) == set(reference) == {"score", "tag"}
    for name in fast:
        np.testing.assert_array_equal(fast[name].numpy(), reference[name].numpy())
    want = [expected_score(x, c, 1.5) for x, c in [(0.5, "a"), (-2.0, "neg"), (3.0, "b")]]
    np.testing.assert_allclose(fast["score"].numpy(), want, rtol=1e-6)


def _outcome(call: Any, tensors: dict[str, Any]) -> Any:
    try:
        return {k: v.numpy().tolist() for k, v in call(**tensors).items()}
    except Exception as exc:  # noqa: BLE001 - the outcome compared
        return type(exc).__name__


def test_tensors_that_do_not_fit_behave_as_with_the_concrete_function(servable: Any) -> None:
    import tensorflow as tf

    from serving.runtime.signatures import run_signature

    fn = servable.signatures["serving_default"]
    good_c = tf.constant(np.array([b"a"], dtype=object))
    cases = {
        "wrong dtype": {"x": tf.constant(np.array([1], np.int64)), "c": good_c},
        # a loaded signature relaxes shapes: TF answers; the codecs check shapes before
        "wrong rank": {"x": tf.constant(np.array([[1.0]], np.float32)), "c": good_c},
        "missing input": {"x": tf.constant(np.array([1.0], np.float32))},
    }
    outcomes = {what: _outcome(fn, tensors) for what, tensors in cases.items()}
    assert outcomes == {what: _outcome(fn.fn, tensors) for what, tensors in cases.items()}
    assert outcomes["wrong dtype"] == "InvalidArgumentError"
    assert outcomes["missing input"] == "TypeError"
    for what in ("wrong dtype", "missing input"):
        with pytest.raises(ApiError) as err:
            run_signature(fn, cases[what])
        assert err.value.status_code == 400, what
