"""Attribution methods, one module each, all reduced to one score per band.

Every method has the same call, `attribute(batch, ctx) -> BandAttribution`, and sits in `METHODS`
under its name.
"""

# Importing registers the methods; the import order is the order of the report.
from xband.methods import saliency  # noqa: F401, I001
from xband.methods import input_x_gradient  # noqa: F401
from xband.methods import integrated_gradients  # noqa: F401
from xband.methods import gradient_shap  # noqa: F401
from xband.methods import feature_ablation  # noqa: F401
from xband.methods import shapley  # noqa: F401
from xband.methods import permutation  # noqa: F401
from xband.methods import lime  # noqa: F401
from xband.methods._base import (
    METHODS,
    BandAttribution,
    Batch,
    Context,
    Method,
    get_method,
)

__all__ = ["METHODS", "BandAttribution", "Batch", "Context", "Method", "get_method"]
