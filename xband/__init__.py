"""xband: which input bands of a multispectral image does a CNN classifier rely on, per class?

    model = xband.load_model("model.keras")
    result = xband.explain(model, (x, y), bands=["B02", "B03", …])

Names are imported on first use, so that `import xband` is quick and loads neither torch nor
the converters until a model or an explanation is asked for.
"""

from __future__ import annotations

import importlib

from xband.imports import keep_triton_out, short_spinning_threads

keep_triton_out()
short_spinning_threads()

_EXPORTS = {
    "SENSORS": "xband.data.sensors",
    "Evaluation": "xband.checks",
    "evaluate": "xband.checks",
    "RunConfig": "xband.run.config",
    "ImageSet": "xband.data.images",
    "Preprocess": "xband.data.images",
    "image_set": "xband.data.images",
    "XbandError": "xband.errors",
    "explain": "xband.run.pipeline",
    "Layout": "xband.layout",
    "METHODS": "xband.methods",
    "FeatureAblation": "xband.methods",
    "GradientShap": "xband.methods",
    "InputXGradient": "xband.methods",
    "IntegratedGradients": "xband.methods",
    "KernelShap": "xband.methods",
    "Lime": "xband.methods",
    "Permutation": "xband.methods",
    "Saliency": "xband.methods",
    "ScaledSaliency": "xband.methods",
    "Shapley": "xband.methods",
    "LoadedModel": "xband.models.load",
    "load_model": "xband.models.load",
    "RayEngine": "xband.run.engine",
    "Fidelity": "converters.fidelity",
    "from_torch": "xband.data.readers",
    "load_images": "xband.data.readers",
    "read_data": "xband.data.readers",
    "read_scene": "xband.data.scenes",
    "Explanation": "xband.run.result",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'xband' has no attribute {name!r}")
    keep_triton_out()  # TensorFlow may have been imported after xband
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
