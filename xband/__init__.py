"""xband: which input bands of a multispectral image does a CNN classifier rely on?"""

from xband.models import Fidelity, LoadedModel, load_model

__all__ = ["Fidelity", "LoadedModel", "load_model"]
