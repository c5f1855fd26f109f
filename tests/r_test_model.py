"""Train the tiny Keras CNN that the R package's tests explain (run once; the model is shipped).

    .venv/bin/python tests/r_test_model.py [--out r/xband/tests/testthat/fixtures/planted.keras]

It learns the planted images of tests/planted.py (6 bands, 12 x 12 pixels, 4 classes; the signal
of class c in band PLANTED[c], none for the last class), channels last as Keras takes them. The R
tests draw new images by the same recipe (helper-planted.R) and check that xband finds the planted
band of each class. Needs the keras extra; prints the held-out accuracy; the file is about 60 kB.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.planted import N_CLASSES, planted_images  # noqa: E402

DEFAULT_OUT = (Path(__file__).resolve().parent.parent / "r" / "xband" / "tests" / "testthat"
               / "fixtures" / "planted.keras")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--epochs", type=int, default=120)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    x_train, y_train = planted_images(n_per_class=150, seed=0)
    x_test, y_test = planted_images(n_per_class=50, seed=99)
    x_train, x_test = (np.moveaxis(x, 1, -1) for x in (x_train, x_test))  # (N, H, W, bands)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input(x_train.shape[1:]),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.GlobalMaxPooling2D(),
        layers.Dense(N_CLASSES, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=len(x_train), verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"held-out accuracy {accuracy:.3f}; saved {args.out} ({Path(args.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
