"""Where the bands are in an image batch: the last axis (Keras, NHWC) or the second (PyTorch, NCHW)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from xband.errors import XbandError


class Layout(StrEnum):
    """The axis of the bands in a batch of images (N, …)."""

    CHANNELS_LAST = "channels_last"  # (N, H, W, B)
    CHANNELS_FIRST = "channels_first"  # (N, B, H, W)

    @classmethod
    def parse(cls, value: str | Layout, what: str = "layout") -> Layout:
        """`value` as a Layout; a message naming `what` and the choices otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise XbandError(f"{what} '{value}' is not one of: "
                             f"{', '.join(m.value for m in cls)}.") from None

    @property
    def band_axis(self) -> int:
        """Axis of the bands in a 4-axis batch."""
        return 3 if self is Layout.CHANNELS_LAST else 1

    @property
    def other(self) -> Layout:
        return Layout.CHANNELS_FIRST if self is Layout.CHANNELS_LAST else Layout.CHANNELS_LAST

    def image_size(self, shape: Sequence[int | None]) -> tuple:
        """(height, width) of a 4-axis batch shape in this layout."""
        return tuple(shape[1:3]) if self is Layout.CHANNELS_LAST else tuple(shape[2:4])

    def n_bands(self, shape: Sequence[int | None]) -> int | None:
        return shape[self.band_axis]
