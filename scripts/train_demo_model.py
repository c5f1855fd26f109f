"""Train the small Keras CNN shipped for `xband demo` (run once; the demo needs no training).

    python scripts/train_demo_model.py [--out xband/demo/assets/demo_model.keras]

Needs the keras extra. Prints the held-out accuracy; the model file is a few hundred kB.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from xband.demo import CLASS_NAMES, IMAGE_SIZE, MODEL_PATH, demo_data  # noqa: E402
from xband.files import atomic_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(MODEL_PATH))
    parser.add_argument("--epochs", type=int, default=25)
    args = parser.parse_args()

    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    x_train, y_train = demo_data(n_per_class=400, seed=0)
    x_test, y_test = demo_data(n_per_class=100, seed=12345)
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(x_train)
    model = keras.Sequential([
        keras.Input((IMAGE_SIZE, IMAGE_SIZE, x_train.shape[-1])),
        norm,
        keras.layers.Conv2D(24, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dense(len(CLASS_NAMES), activation="softmax"),
    ], name="xband_demo_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=2,
              validation_data=(x_test, y_test))
    accuracy = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))
    print(f"held-out accuracy: {accuracy:.3f}")
    with atomic_path(args.out) as tmp:
        model.save(tmp)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
