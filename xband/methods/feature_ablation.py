"""Band ablation: the drop in the class output when one band is replaced by its baseline."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xband.methods._coalitions import LinearSubsetMethod, over_backgrounds


@dataclass(frozen=True)
class FeatureAblation(LinearSubsetMethod):
    """f_t(x) − f_t(x with band b set to its baseline), one value per band (or band group).

    The same numbers as Captum's FeatureAblation with a band mask, batched across images.
    """

    name = "feature_ablation"
    label = "Band ablation"
    units = "f(x) − f(x with the band at its baseline), output units"

    def passes_per_image(self, n_features: int, n_background: int = 1) -> int:
        return n_features * n_background + 1

    def coalitions(self, n_feat: int, n_background: int, n_images: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All features, then all but feature f; W takes the first minus the f-th (its mean
        over the backgrounds)."""
        present = torch.cat([torch.ones(1, n_feat), 1 - torch.eye(n_feat)])
        weights = torch.cat([torch.ones(n_feat, 1), -torch.eye(n_feat)], dim=1).double()
        return over_backgrounds(present, weights, n_background)
