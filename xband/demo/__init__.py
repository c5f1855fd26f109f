"""The built-in demo: synthetic Sentinel-2 patches whose class signal sits in known bands.

Each class has its own planted band(s): a bright blob in that band marks the class. Every image
also carries a blob in one "distractor" band that no class uses, so a model must look at which
band holds the blob, not just whether there is one. B10 (cirrus) has a tiny spread, as in real
Sentinel-2 data: raw saliency tends to over-rank it (product.md, "a trap with raw gradients").

`scripts/train_demo_model.py` trains the shipped Keras model on `demo_data(seed=0)`; the demo
explains it on fresh images from another seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BAND_NAMES = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
              "B12"]
# typical top-of-atmosphere reflectance level and spread per band
BAND_LEVEL = np.array([0.13, 0.11, 0.10, 0.09, 0.12, 0.19, 0.22, 0.24, 0.25, 0.08, 0.004, 0.18,
                       0.12], dtype=np.float32)
BAND_SPREAD = np.array([0.02, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.02, 0.0005, 0.03,
                        0.03], dtype=np.float32)
PLANTED = {
    "Water": ["B02"],
    "Crop": ["B05"],
    "Forest": ["B08"],
    "Bare soil": ["B11"],
    "Urban": ["B04", "B12"],
}
CLASS_NAMES = list(PLANTED)
DISTRACTORS = ["B01", "B06", "B07", "B8A", "B09"]
IMAGE_SIZE = 32
BLOB_HEIGHT = 0.08
MODEL_PATH = Path(__file__).parent / "assets" / "demo_model.keras"


def _smooth_noise(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Spatially correlated noise (n, 13, size, size) with unit spread."""
    coarse = rng.normal(size=(n, len(BAND_NAMES), size // 4, size // 4))
    smooth = np.kron(coarse, np.ones((1, 1, 4, 4)))
    return (0.8 * smooth + 0.6 * rng.normal(size=smooth.shape)).astype(np.float32)


def _blobs(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """One Gaussian blob (peak 1) per image at a random place, (n, size, size)."""
    yy, xx = np.mgrid[0:size, 0:size]
    centre = rng.uniform(6, size - 6, size=(n, 2))
    radius = rng.uniform(3, 6, size=(n, 1, 1))
    dist2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    return np.exp(-dist2 / (2 * radius**2)).astype(np.float32)


def demo_data(n_per_class: int = 60, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 13) channels-last as a Keras model takes them, and labels (N,)."""
    rng = np.random.default_rng(seed)
    n = n_per_class * len(CLASS_NAMES)
    labels = np.repeat(np.arange(len(CLASS_NAMES)), n_per_class)
    noise = _smooth_noise(rng, n, IMAGE_SIZE)
    x = BAND_LEVEL[None, :, None, None] + BAND_SPREAD[None, :, None, None] * noise
    for c, name in enumerate(CLASS_NAMES):
        members = np.flatnonzero(labels == c)
        blob = _blobs(rng, len(members), IMAGE_SIZE)
        for band in PLANTED[name]:
            x[members, BAND_NAMES.index(band)] += BLOB_HEIGHT * blob
    distractor = rng.choice([BAND_NAMES.index(b) for b in DISTRACTORS], size=n)
    x[np.arange(n), distractor] += BLOB_HEIGHT * _blobs(rng, n, IMAGE_SIZE)
    order = rng.permutation(n)
    return np.moveaxis(x[order], 1, 3).copy(), labels[order]


def demo_multilabel_data(n: int = 200, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label patches, channels-first (N, 13, 32, 32) as a PyTorch model takes them, and
    multi-hot labels (N, 5): each image carries the blobs of one to three classes (each in its
    class's planted band(s), at its own place), as a BigEarthNet patch carries several labels,
    and one distractor blob."""
    rng = np.random.default_rng(seed)
    noise = _smooth_noise(rng, n, IMAGE_SIZE)
    x = BAND_LEVEL[None, :, None, None] + BAND_SPREAD[None, :, None, None] * noise
    present = np.zeros((n, len(CLASS_NAMES)), dtype=np.int64)
    for i, count in enumerate(rng.integers(1, 4, size=n)):
        present[i, rng.choice(len(CLASS_NAMES), count, replace=False)] = 1
    for c, name in enumerate(CLASS_NAMES):
        members = np.flatnonzero(present[:, c])
        blob = _blobs(rng, len(members), IMAGE_SIZE)
        for band in PLANTED[name]:
            x[members, BAND_NAMES.index(band)] += BLOB_HEIGHT * blob
    distractor = rng.choice([BAND_NAMES.index(b) for b in DISTRACTORS], size=n)
    x[np.arange(n), distractor] += BLOB_HEIGHT * _blobs(rng, n, IMAGE_SIZE)
    return x.astype(np.float32), present
