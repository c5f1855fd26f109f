"""Shared pytest set-up: the planted data and the models trained on it, once per test session.

Every test that needs "a model that relies on known bands" takes these fixtures instead of
training its own: the torch CNN (`planted_torch`) and the Keras CNN with its saved forms
(`planted_keras`), trained on the same planted images (tests/planted.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from tests.planted import keras_python, planted_images, train_torch


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "keras: builds or converts Keras models in TensorFlow subprocesses (slower)")


@pytest.fixture(scope="session")
def planted_train() -> tuple[np.ndarray, np.ndarray]:
    """The training images (N, B, H, W) and labels every planted model is fitted on."""
    return planted_images(n_per_class=80, seed=0)


@pytest.fixture(scope="session")
def planted_torch(planted_train) -> nn.Module:
    """The planted-band CNN in torch, ending in logits, in eval mode. Shared: never train it
    in place or change its parameters (copy it first)."""
    return train_torch(*planted_train)


KERAS_TRAIN = """
import sys
import keras
import numpy as np
import tensorflow as tf
import tf2onnx

keras.utils.set_random_seed(0)
data, out = np.load(sys.argv[1]), sys.argv[2]
x, y = data["x"], data["y"]
model = keras.Sequential([
    keras.Input(x.shape[1:]),
    keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
    keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
    keras.layers.GlobalMaxPooling2D(),
    keras.layers.Dense(int(y.max()) + 1, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
model.fit(x, y, epochs=40, batch_size=64, verbose=0)
model.save(f"{out}/planted.keras")
model.save(f"{out}/planted.h5")
model.export(f"{out}/planted_savedmodel", format="tf_saved_model")
signature = (tf.TensorSpec((None, *x.shape[1:]), tf.float32, name="input"),)
proto = tf2onnx.convert.from_function(tf.function(lambda t: model(t, training=False)),
                                      input_signature=signature, opset=17)[0]
with open(f"{out}/planted_from_keras.onnx", "wb") as f:
    f.write(proto.SerializeToString())
"""


@dataclass(frozen=True)
class KerasFiles:
    """The planted-band Keras CNN (bands last, final softmax) in every form Keras users save."""

    keras: Path
    h5: Path
    savedmodel: Path
    onnx: Path  # exported by tf2onnx, as a user would before handing xband an .onnx file


@pytest.fixture(scope="session")
def planted_keras(tmp_path_factory, planted_train) -> KerasFiles:
    folder = tmp_path_factory.mktemp("planted_keras")
    x, y = planted_train
    np.savez(folder / "train.npz", x=np.moveaxis(x, 1, 3), y=y)
    keras_python(KERAS_TRAIN, str(folder / "train.npz"), str(folder))
    return KerasFiles(folder / "planted.keras", folder / "planted.h5",
                      folder / "planted_savedmodel", folder / "planted_from_keras.onnx")


@pytest.fixture(scope="session")
def keras_cache(tmp_path_factory) -> Path:
    """One conversion cache for the Keras tests, so each model converts once."""
    return tmp_path_factory.mktemp("keras_cache")
