"""xband: which input bands of a multispectral image does a CNN classifier rely on, per class?"""

from xband.bands import SENSORS
from xband.checks import Evaluation, evaluate
from xband.data import ImageSet, Preprocess, image_set, load_images
from xband.errors import XbandError
from xband.explain import explain
from xband.methods import METHODS
from xband.models import Fidelity, LoadedModel, load_model
from xband.readers import from_torch, read_data
from xband.result import Explanation

__all__ = ["METHODS", "SENSORS", "Evaluation", "Explanation", "Fidelity", "ImageSet", "LoadedModel",
           "Preprocess", "XbandError", "evaluate", "explain", "from_torch", "image_set",
           "load_images", "load_model", "read_data"]
