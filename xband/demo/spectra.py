"""Planted hyperspectral data: smooth reflectance spectra whose classes differ by one absorption
feature at a known wavelength, for tests, the demo and the cost measurements.

Every pixel mixes three background materials (each spectrum a sum of broad Gaussians) with
smoothly varying abundances; an image of class c carries ABSORPTION_NM[c] as a narrow dip in a
blob, and every image one more dip at a wavelength no class uses (DISTRACTOR_NM). The last class
has no dip of its own, so that the absence of one class's dip is not another class's cue.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

WAVELENGTH_RANGE_NM = (400.0, 2500.0)
ABSORPTION_NM = {0: 660.0, 1: 1150.0, 2: 1750.0, 3: 2250.0}  # class → its absorption feature
DISTRACTOR_NM = (1000.0, 1550.0, 2050.0)  # dips no class uses
CLASS_NAMES = ("red dip", "NIR dip", "SWIR1 dip", "SWIR2 dip", "no dip")
_DIP_WIDTH_NM = 25.0  # standard deviation of a dip's Gaussian
# background materials: (centre nm, width nm, height) of the Gaussians summed into each spectrum
_MATERIALS = (
    ((550, 120, 0.10), (900, 300, 0.35), (1650, 250, 0.25), (2200, 200, 0.15)),
    ((700, 400, 0.30), (1300, 350, 0.20), (2100, 300, 0.20)),
    ((500, 200, 0.15), (1100, 500, 0.15), (1800, 400, 0.10)),
)


def wavelengths(n_bands: int = 200) -> np.ndarray:
    """Centre wavelengths (nm) of `n_bands` evenly spaced bands over WAVELENGTH_RANGE_NM."""
    return np.linspace(*WAVELENGTH_RANGE_NM, n_bands)


def _gaussian(wavelength: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((wavelength - centre) / width) ** 2)


def material_spectra(wavelength: np.ndarray) -> np.ndarray:
    """(M, B) reflectance of the background materials, each a sum of broad Gaussians."""
    return np.stack([0.05 + sum(h * _gaussian(wavelength, c, w) for c, w, h in material)
                     for material in _MATERIALS])


def spectral_images(n_per_class: int = 40, *, n_bands: int = 200, size: int = 8, seed: int = 0,
                    noise: float = 0.003) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (N, B, H, W) float32, labels (N,) and band wavelengths (B,) in nm, seeded."""
    rng = np.random.default_rng(seed)
    wavelength = wavelengths(n_bands)
    spectra = material_spectra(wavelength)
    labels = rng.permutation(np.repeat(np.arange(len(CLASS_NAMES)), n_per_class))
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    x = np.empty((len(labels), n_bands, size, size), dtype=np.float32)
    for i, c in enumerate(labels.tolist()):
        abundance = rng.dirichlet(np.ones(len(spectra)), size=3)  # corners of a smooth ramp
        weights = (abundance[0][:, None, None] * (1 - yy) + abundance[1][:, None, None] * yy
                   + abundance[2][:, None, None] * xx) / (1 + xx)
        reflectance = np.einsum("mhw,mb->bhw", weights, spectra)
        dips = [rng.choice(DISTRACTOR_NM)] + ([ABSORPTION_NM[c]] if c in ABSORPTION_NM else [])
        for centre in dips:
            depth = rng.uniform(0.5, 0.7) * _blob(rng, yy, xx)
            reflectance *= 1 - depth[None] * _gaussian(wavelength, centre, _DIP_WIDTH_NM)[:, None,
                                                                                          None]
        x[i] = reflectance + rng.normal(scale=noise, size=reflectance.shape)
    return x, labels, wavelength


# the bands the corrected AVIRIS scenes leave out around the water-vapour absorptions, nm
REMOVED_NM = ((1340.0, 1440.0), (1800.0, 1950.0))


def gapped_wavelengths(n_bands: int = 224) -> np.ndarray:
    """`n_bands` evenly spaced centres over WAVELENGTH_RANGE_NM without those in REMOVED_NM,
    as a scene whose water-vapour bands were removed (gaps in the band centres)."""
    wavelength = wavelengths(n_bands)
    removed = np.any([(wavelength >= low) & (wavelength <= high) for low, high in REMOVED_NM],
                     axis=0)
    return wavelength[~removed]


def pixel_spectra(n_per_class: int = 40, *, wavelength: np.ndarray | None = None, seed: int = 0,
                  noise: float = 0.003) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spectra of single pixels (N, B) float32, labels (N,) and band centres (B,) in nm, seeded:
    each a random mix of the background materials; class c with a dip at ABSORPTION_NM[c],
    every pixel one more at a distractor wavelength. Default centres: `gapped_wavelengths()`."""
    rng = np.random.default_rng(seed)
    wavelength = gapped_wavelengths() if wavelength is None else np.asarray(wavelength)
    labels = rng.permutation(np.repeat(np.arange(len(CLASS_NAMES)), n_per_class))
    abundance = rng.dirichlet(np.ones(len(_MATERIALS)), size=len(labels))
    x = abundance @ material_spectra(wavelength)
    for i, c in enumerate(labels.tolist()):
        dips = [rng.choice(DISTRACTOR_NM)] + ([ABSORPTION_NM[c]] if c in ABSORPTION_NM else [])
        for centre in dips:
            x[i] *= 1 - rng.uniform(0.3, 0.6) * _gaussian(wavelength, centre, _DIP_WIDTH_NM)
    x += rng.normal(scale=noise, size=x.shape)
    return x.astype(np.float32), labels, wavelength


class StandardiseSpectra(nn.Module):
    """Per-band (x − mean) / std of spectra (N, B) or (N, 1, B), inside the network."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))  # (B,)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))  # (B,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def spectral_conv1d(x: np.ndarray, n_classes: int) -> nn.Module:
    """A 1-D CNN on spectra (N, 1, B), as torch users build one: standardisation (from the
    spectra `x`, (N, B)), a convolution along the spectrum, pooling, a linear layer."""
    n_bands = x.shape[1]
    return nn.Sequential(
        StandardiseSpectra(x.mean(axis=0), x.std(axis=0)),
        nn.Conv1d(1, 8, 7, padding=3), nn.ReLU(), nn.MaxPool1d(4), nn.Flatten(),
        nn.Linear(8 * (n_bands // 4), n_classes),
    )


def train_conv1d(x: np.ndarray, y: np.ndarray, epochs: int = 40, seed: int = 0) -> nn.Module:
    """`spectral_conv1d` fitted full-batch on spectra `x` (N, B); returns logits in eval mode.
    It takes (N, 1, B)."""
    return fit_full_batch(lambda: spectral_conv1d(x, int(y.max()) + 1), x[:, None, :], y,
                          epochs=epochs, lr=1e-2, seed=seed)


def _blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    cy, cx = rng.uniform(0.25, 0.75, 2)
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.08)


class Standardise(nn.Module):
    """Per-band (x − mean) / std inside the network, as a Keras Normalization layer does."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def spectral_cnn(x: np.ndarray, n_classes: int) -> nn.Module:
    """Per-band standardisation (from `x`), two 16-filter convolutions, global max pool: the
    same size whatever the band count but for the first convolution's inputs."""
    return nn.Sequential(
        Standardise(x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))),
        nn.Conv2d(x.shape[1], 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, n_classes),
    )


def fit_full_batch(make_net: Callable[[], nn.Module], x: np.ndarray, y: np.ndarray, *,
                   epochs: int, lr: float, seed: int = 0) -> nn.Module:
    """The network `make_net` builds (after seeding torch, so its weights are seeded too),
    fitted full-batch with Adam on cross-entropy; in eval mode. The planted test sets are small
    enough to fit in one batch."""
    torch.manual_seed(seed)
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


def train_spectral(x: np.ndarray, y: np.ndarray, epochs: int = 80, seed: int = 0) -> nn.Module:
    """`spectral_cnn` fitted full-batch (Adam, seeded); returns logits in eval mode."""
    return fit_full_batch(lambda: spectral_cnn(x, int(y.max()) + 1), x, y, epochs=epochs,
                          lr=3e-3, seed=seed)
