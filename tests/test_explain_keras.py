"""A Keras model trained on planted bands, through Keras → ONNX → PyTorch: every method finds
the planted band of each class."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.planted import N_CLASSES, PLANTED, planted_images
from xband import explain, image_set, load_model
from xband.methods import METHODS

pytestmark = pytest.mark.keras

TRAIN = """
import sys
import keras
import numpy as np

keras.utils.set_random_seed(0)
data = np.load(sys.argv[1])
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
model.save(sys.argv[2])
"""


@pytest.fixture(scope="module")
def keras_planted(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("keras_planted")
    x, y = planted_images(n_per_class=100, seed=0)
    np.savez(folder / "train.npz", x=np.moveaxis(x, 1, 3), y=y)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRAIN), str(folder / "train.npz"),
         str(folder / "planted.keras")],
        capture_output=True, text=True, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "planted.keras", folder


def test_every_method_finds_the_planted_bands_through_onnx(keras_planted, monkeypatch):
    path, folder = keras_planted
    monkeypatch.setenv("XBAND_CACHE_DIR", str(folder / "cache"))
    x, y = planted_images(n_per_class=15, seed=1)
    images = np.moveaxis(x, 1, 3)  # Keras models take bands last
    model = load_model(path, probe=images[:16], verbose=False)
    assert model.source_format == "keras" and model.layout == "channels_last"
    assert model.fidelity.passed and model.fidelity.max_abs_diff <= 1e-4
    assert model.logits_module is not None
    data = image_set(images, y)
    result = explain(model, data, methods="all", progress=False, n_boot=100)
    assert result.summary["accuracy"]["overall"] >= 0.9
    for method in METHODS:
        table = result.table(method)
        for c, band in PLANTED.items():
            rows = table[table["class"] == f"class {c}"]
            top = rows.loc[rows["rank"] == 1, "band_index"].tolist()
            assert top == [band], f"{method}: class {c} top {top}, planted {band}"
    assert result.scores["saliency"].shape == (len(y), x.shape[1])
    assert len(result.class_names) == N_CLASSES
