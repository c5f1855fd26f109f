"""A segmentation run: each (image, class present) pair explained through its class mask.

The network the methods call is `xband.models.segmentation.ClassPixels`: the image with its
class mask as one more channel gives, per class, the mean output over the class's pixels. The
mask of each candidate image is fixed before the run: its label mask (target "true"), or the
network's own prediction on the unperturbed image (target "predicted"). The pairs are then those
of a multi-label run (each image with each class its mask has pixels of), and every method,
round, table and figure works on them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from xband.data.images import ImageSet, batches
from xband.data.masks import IGNORED
from xband.models.load import LoadedModel
from xband.models.segmentation import ClassPixels
from xband.run.forward import forward_module

SHARE_FOUND = 0.5  # a class counts as found in an image when this share of its pixels is


def class_pixels(model: LoadedModel, output: str) -> nn.Module:
    """The segmentation network as the methods call it: image and class mask in, per class the
    mean `output` (logits or probabilities) over its pixels, and the share of them found."""
    return ClassPixels(model.network(output), model.layout, model.segmentation, model.n_classes)


@dataclass(frozen=True)
class ClassMasks:
    """Each candidate image's class per pixel, as the run explains it, and how the network's
    predicted masks compare with the label masks."""

    masks: np.ndarray  # (P, H, W) int16: each pixel's class, IGNORED for none
    # (C, C) pixels by label class (rows) and predicted class (columns), over the candidate
    # images; None without label masks
    confusion: np.ndarray | None
    predicted: bool  # whether `masks` are the network's predictions


def class_masks(model: LoadedModel, data: ImageSet, indices: np.ndarray, *, target: str,
                device: str, batch_size: int) -> ClassMasks:
    """The masks of the candidate images at `indices` (positions in `data`): their label masks,
    or with target "predicted" (or without masks) the network's predictions, computed once on
    the unperturbed images; with label masks, the pixel confusion of the predictions."""
    n_classes = model.n_classes
    network = forward_module(model.network("logits"), model.layout, device)
    predicted = np.empty((len(indices), *data.image_size), dtype=np.int16)
    labels = data.read_masks(indices, n_classes) if data.segmentation else None
    with torch.inference_mode():
        for part in batches(np.arange(len(indices)), batch_size):
            out = network(torch.from_numpy(data.take(indices[part])).to(device))
            predicted[part] = out.argmax(dim=model.class_axis).cpu().numpy()
    confusion = None if labels is None else pixel_confusion(labels, predicted, n_classes)
    use_predicted = target == "predicted" or labels is None
    return ClassMasks(predicted if use_predicted else labels, confusion, use_predicted)


def pixel_confusion(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts of labelled pixels by label class (rows) and predicted class (columns)."""
    known = labels != IGNORED
    pairs = labels[known].astype(np.int64) * n_classes + predicted[known]
    return np.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def pixel_scores(confusion: np.ndarray | None, names: list[str] | tuple[str, ...]) -> dict:
    """summary.json's accuracy of a segmentation run: the share of labelled pixels predicted
    right, and per class its pixel accuracy (the share of its pixels predicted as it), its IoU
    (intersection over union of its label and predicted pixels) and its pixels; mean IoU over
    the classes with pixels. Without label masks, nothing to count."""
    scores: dict = {"overall": None, "segmentation": True, "per_class": {}}
    if confusion is None:
        return scores
    right = np.diag(confusion).astype(float)
    pixels, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy, iou = right / pixels, right / (pixels + predicted - right)
    scores["overall"] = float(right.sum() / max(1, confusion.sum()))
    scores["per_class"] = {name: {"pixel_accuracy": _number(accuracy[c]), "iou": _number(iou[c]),
                                  "pixels": int(pixels[c])}
                           for c, name in enumerate(names)}
    scores["mean_iou"] = _number(np.nanmean(np.where(pixels > 0, iou, np.nan))
                                 if (pixels > 0).any() else np.nan)
    return scores


def _number(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)
