"""How a model takes its input: images with the bands on the last axis (Keras, NHWC) or the
second (PyTorch, NCHW), or single spectra (per-pixel models: MLP, 1-D CNN, Transformer).

Inside xband every batch is channels-first images (N, B, H, W); a spectrum is a 1×1 image
(N, B, 1, 1), reshaped to what the model takes only at the network's door
(`xband.run.forward.ChannelsFirst`), so that every method works on spectra unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from xband.errors import XbandError


class Layout(StrEnum):
    """The axis of the bands in a batch (N, …) as the model or the file holds it."""

    CHANNELS_LAST = "channels_last"  # (N, H, W, B)
    CHANNELS_FIRST = "channels_first"  # (N, B, H, W)
    SPECTRA = "spectra"  # (N, B): one spectrum a row (Dense, MLP, Transformer on spectra)
    SPECTRA_CHANNELS_LAST = "spectra_channels_last"  # (N, B, 1): Keras Conv1D, steps = bands
    SPECTRA_CHANNELS_FIRST = "spectra_channels_first"  # (N, 1, B): torch Conv1d, one channel

    @classmethod
    def parse(cls, value: str | Layout, what: str = "layout") -> Layout:
        """`value` as a Layout; a message naming `what` and the choices otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise XbandError(f"{what} '{value}' is not one of: "
                             f"{', '.join(m.value for m in cls)}.") from None

    @property
    def spectra(self) -> bool:
        """Whether the model takes single spectra (no image axes)."""
        return self in _SPECTRA_SHAPES

    @property
    def images(self) -> Layout:
        """How xband holds the input of a model in this layout: spectra as channels-first
        1×1 images (N, B, 1, 1), images as they are."""
        return Layout.CHANNELS_FIRST if self.spectra else self

    @property
    def band_axis(self) -> int:
        """Axis of the bands in a batch laid out this way."""
        return {Layout.CHANNELS_LAST: 3, Layout.SPECTRA_CHANNELS_FIRST: 2}.get(self, 1)

    @property
    def other(self) -> Layout:
        """The other image layout (spectra: channels-last images)."""
        return Layout.CHANNELS_FIRST if self is Layout.CHANNELS_LAST else Layout.CHANNELS_LAST

    def image_size(self, shape: Sequence[int | None]) -> tuple:
        """(height, width) of a batch shape in this layout; (1, 1) for spectra."""
        if self.spectra:
            return (1, 1)
        return tuple(shape[1:3]) if self is Layout.CHANNELS_LAST else tuple(shape[2:4])

    def n_bands(self, shape: Sequence[int | None]) -> int | None:
        return shape[self.band_axis]

    def spectrum_shape(self, n_bands: int) -> tuple[int, ...]:
        """The shape of one spectrum (without the batch axis) as a model in this layout takes
        it: (B,), (B, 1) or (1, B)."""
        return tuple(n_bands if d is None else d for d in _SPECTRA_SHAPES[self])

    def describe(self) -> str:
        """The input this layout means, in words."""
        return _WORDS[self]


_SPECTRA_SHAPES = {Layout.SPECTRA: (None,), Layout.SPECTRA_CHANNELS_LAST: (None, 1),
                   Layout.SPECTRA_CHANNELS_FIRST: (1, None)}
_WORDS = {
    Layout.CHANNELS_LAST: "images (batch, height, width, bands)",
    Layout.CHANNELS_FIRST: "images (batch, bands, height, width)",
    Layout.SPECTRA: "spectra (batch, bands)",
    Layout.SPECTRA_CHANNELS_LAST: "spectra (batch, bands, 1): bands as steps, one channel",
    Layout.SPECTRA_CHANNELS_FIRST: "spectra (batch, 1, bands): one channel, bands as length",
}


def spectra_layout(shape: Sequence[int | None]) -> Layout | None:
    """The spectra layout an input shape (with its batch axis) declares: rank 2 is (N, B);
    rank 3 is (N, B, 1) or (N, 1, B) by the axis of size 1; None for other shapes (images,
    or a rank-3 shape with no axis of size 1)."""
    if len(shape) == 2:
        return Layout.SPECTRA
    if len(shape) == 3:
        if shape[2] == 1:
            return Layout.SPECTRA_CHANNELS_LAST
        if shape[1] == 1:
            return Layout.SPECTRA_CHANNELS_FIRST
    return None
