"""Synthetic images whose class signal sits in known bands, and small models trained on them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from torch import nn

from xband.demo.spectra import fit_full_batch

N_BANDS = 6
SIZE = 12
PLANTED = {0: 0, 1: 2, 2: 4}  # class → the band that carries its signal
N_CLASSES = 4  # the last class has no planted band: "no signal" must not be another class's cue
DISTRACTORS = [1, 3, 5]  # bands with a blob no class uses


def planted_images(n_per_class: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, B, H, W) of zero-mean noise; class c has a blob in band PLANTED[c], every image
    a blob in a random distractor band."""
    rng = np.random.default_rng(seed)
    n = n_per_class * N_CLASSES
    labels = np.repeat(np.arange(N_CLASSES), n_per_class)
    x = rng.normal(scale=0.3, size=(n, N_BANDS, SIZE, SIZE)).astype(np.float32)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]

    def blob() -> np.ndarray:
        cy, cx = rng.uniform(3, SIZE - 3, 2)
        return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0).astype(np.float32)

    for i, c in enumerate(labels):
        if int(c) in PLANTED:
            x[i, PLANTED[int(c)]] += 2.0 * blob()
        x[i, rng.choice(DISTRACTORS)] += 2.0 * blob()
    order = rng.permutation(n)
    return x[order], labels[order]


def small_cnn(n_bands: int = N_BANDS, n_classes: int = N_CLASSES) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(n_bands, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, n_classes),
    )


def train_torch(x: np.ndarray, y: np.ndarray, epochs: int = 60, seed: int = 0) -> nn.Module:
    """A small CNN fitted full-batch; returns logits in eval mode."""
    return fit_full_batch(lambda: small_cnn(x.shape[1], int(y.max()) + 1), x, y, epochs=epochs,
                          lr=1e-2, seed=seed)


ML_PLANTED = {0: 0, 1: 2, 2: 4, 3: 5}  # multi-label: class → its band; two classes per image
ML_DISTRACTORS = [1, 3]


def planted_multilabel(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, B, H, W) of noise, each with blobs in the bands of two of the four classes
    (multi-hot labels (N, 4)) and one in a distractor band."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=0.3, size=(n, N_BANDS, SIZE, SIZE)).astype(np.float32)
    present = np.zeros((n, len(ML_PLANTED)), dtype=np.int64)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i in range(n):
        for c in rng.choice(len(ML_PLANTED), 2, replace=False):
            cy, cx = rng.uniform(3, SIZE - 3, 2)
            x[i, ML_PLANTED[c]] += 2.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)
            present[i, c] = 1
        cy, cx = rng.uniform(3, SIZE - 3, 2)
        x[i, rng.choice(ML_DISTRACTORS)] += 2.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)
    return x, present


def train_multilabel(x: np.ndarray, present: np.ndarray, epochs: int = 80,
                     seed: int = 0) -> nn.Module:
    """A small CNN ending in a sigmoid per class, fitted full-batch with binary cross-entropy."""
    torch.manual_seed(seed)
    body = small_cnn(x.shape[1], present.shape[1])
    opt = torch.optim.Adam(body.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(present).float()
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(body(xt), yt).backward()
        opt.step()
    return nn.Sequential(body, nn.Sigmoid()).eval()


def level_images(n_per_class: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, B, H, W) of noise whose class is the level of band 0 (0, 0.5 or 1): class 1
    sits at the band's mean, where replacing the band by its mean changes nothing."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    x = rng.normal(scale=0.3, size=(len(labels), N_BANDS, SIZE, SIZE)).astype(np.float32)
    x[:, 0] += (0.5 * labels + rng.uniform(-0.1, 0.1, len(labels)))[:, None, None]
    order = rng.permutation(len(labels))
    return x[order], labels[order]



def keras_python(code: str, *args: str) -> None:
    """Run Python `code` with TensorFlow in a subprocess (TensorFlow and torch never share a
    process); fail the test if it fails."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], check=False,
                          capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]


class DiesOnWorkers:
    """Images whose reading kills the process that reads them, unless it is the driver: a
    worker that dies each time it takes a job (here, so that Ray workers can import it)."""

    def __init__(self, images: np.ndarray):
        self.images, self.shape, self.driver = images, images.shape, os.getpid()

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        if os.getpid() != self.driver:
            os._exit(3)
        return self.images[indices]


SEG_BANDS = 5
SEG_PLANTED = {0: 0, 1: 1, 2: 2}  # segmentation: class → the band its pixels are bright in
SEG_DISTRACTOR = 3  # bright blobs everywhere, whatever the class
SEG_SIZE = 16
SEG_IGNORE = 255  # the mask value of unlabelled pixels


def planted_segmentation(n: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, B, H, W) of noise cut into three regions around random centres, each region of
    a random class whose pixels are bright in band SEG_PLANTED[class]; bright blobs in the
    distractor band everywhere; masks (N, H, W) with each pixel's class and an unlabelled
    (SEG_IGNORE) first row."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=0.3, size=(n, SEG_BANDS, SEG_SIZE, SEG_SIZE)).astype(np.float32)
    yy, xx = np.mgrid[0:SEG_SIZE, 0:SEG_SIZE]
    masks = np.empty((n, SEG_SIZE, SEG_SIZE), dtype=np.uint8)
    for i in range(n):
        centres = rng.uniform(0, SEG_SIZE, (3, 2))
        nearest = np.argmin([(yy - cy) ** 2 + (xx - cx) ** 2 for cy, cx in centres], axis=0)
        classes = rng.integers(0, len(SEG_PLANTED), 3)
        masks[i] = classes[nearest]
        for c, band in SEG_PLANTED.items():
            x[i, band] += 1.5 * (masks[i] == c)
        cy, cx = rng.uniform(0, SEG_SIZE, 2)
        x[i, SEG_DISTRACTOR] += 2.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 12.0)
    masks[:, 0] = SEG_IGNORE
    return x, masks


class SmallUNet(nn.Module):
    """A two-level U-Net: per-pixel class logits (N, C, H, W) at the input's size."""

    def __init__(self, n_bands: int = SEG_BANDS, n_classes: int = len(SEG_PLANTED),
                 width: int = 12):
        super().__init__()

        def block(i: int, o: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.ReLU())

        self.down, self.low = block(n_bands, width), block(width, 2 * width)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.mix, self.head = block(2 * width, width), nn.Conv2d(width, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        low = self.low(nn.functional.max_pool2d(skip, 2))
        return self.head(self.mix(torch.cat([skip, self.up(low)], dim=1)))


def train_unet(x: np.ndarray, masks: np.ndarray, epochs: int = 120, seed: int = 0) -> nn.Module:
    """`SmallUNet` fitted full-batch on per-pixel cross-entropy (unlabelled pixels left out),
    ending in a softmax over the classes (which xband strips); in eval mode."""
    torch.manual_seed(seed)
    net = SmallUNet(x.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(masks.astype(np.int64))
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt, ignore_index=SEG_IGNORE).backward()
        opt.step()
    return nn.Sequential(net, nn.Softmax(dim=1)).eval()
