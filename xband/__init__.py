"""xband: which input bands of a multispectral image does a CNN classifier rely on, per class?"""

from xband.data import ImageSet, image_set, load_images
from xband.errors import XbandError
from xband.explain import explain
from xband.methods import METHODS
from xband.models import Fidelity, LoadedModel, load_model
from xband.result import Explanation

__all__ = ["METHODS", "Explanation", "Fidelity", "ImageSet", "LoadedModel", "XbandError", "explain",
           "image_set", "load_images", "load_model"]
