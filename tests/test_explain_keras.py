"""A Keras model trained on planted bands, through Keras → ONNX → PyTorch: every method finds
the planted band of each class."""

from __future__ import annotations

import numpy as np
import pytest

from tests.planted import N_CLASSES, PLANTED, planted_images
from xband import explain, image_set, load_model
from xband.methods import METHODS

pytestmark = pytest.mark.keras


def test_every_method_finds_the_planted_bands_through_onnx(planted_keras, keras_cache):
    x, y = planted_images(n_per_class=15, seed=1)
    images = np.moveaxis(x, 1, 3)  # Keras models take bands last
    model = load_model(planted_keras.keras, probe=images[:16], verbose=False,
                       cache_dir=keras_cache)
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
