"""xband from R: xband.R run end to end by Rscript on planted data, as GeoTIFFs written by terra
(its default LZW compression) and as an R array (written as a column-major .npy). Skipped where
Rscript or R's terra/jsonlite are missing (.ci/run installs them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.planted import N_CLASSES, PLANTED, planted_images, train_torch
from xband.cli.main import R_FILE

BANDS = ["coastal", "blue", "green", "red", "nir", "swir"]
CLASSES = ["Water", "Crop", "Forest", "Urban"]  # the model's output order, not sorted


def r_packages_present() -> bool:
    if shutil.which("Rscript") is None:
        return False
    check = subprocess.run(["Rscript", "-e", "library(terra); library(jsonlite)"],
                           capture_output=True)
    return check.returncode == 0


pytestmark = pytest.mark.skipif(not r_packages_present(),
                                reason="Rscript with terra and jsonlite is not installed")

SCRIPT = r"""
suppressPackageStartupMessages({library(terra); library(jsonlite)})
source(Sys.getenv("XBAND_R"))
work <- Sys.getenv("WORK")
dims <- scan(file.path(work, "dims.txt"), quiet = TRUE)   # N, B, H, W of the C-ordered floats
flat <- readBin(file.path(work, "images.bin"), "numeric", prod(dims), size = 4)
x <- aperm(array(flat, dim = rev(dims)), c(4, 2, 1, 3))  # (images, height, width, bands)
classes <- strsplit(Sys.getenv("CLASSES"), ",")[[1]]
bands <- strsplit(Sys.getenv("BANDS"), ",")[[1]]
y <- factor(classes[scan(file.path(work, "labels.txt"), quiet = TRUE) + 1], levels = classes)

# GeoTIFFs as terra writes them by default, one folder per class
for (i in seq_len(dim(x)[1])) {
  folder <- file.path(work, "tifs", as.character(y[i]))
  dir.create(folder, recursive = TRUE, showWarnings = FALSE)
  r <- rast(x[i, , , ])
  names(r) <- bands
  writeRaster(r, file.path(folder, sprintf("patch_%03d.tif", i)))
}
model <- file.path(work, "model.onnx")
methods <- c("saliency", "feature_ablation")
from_tifs <- xband_explain(model, file.path(work, "tifs"), methods = methods,
                           out = file.path(work, "report_tifs"),
                           args = c("--classes", paste(classes, collapse = ",")))
from_array <- xband_explain(model, x, y, bands = bands, methods = methods,
                            out = file.path(work, "report_array"))
shares <- xband_heatmap(from_array, "feature_ablation", file = file.path(work, "heatmap.png"))
failed <- tryCatch(xband_explain(model, x, y, bands = bands[1:3], methods = "saliency",
                                 out = file.path(work, "report_bad")),
                   error = function(e) conditionMessage(e))
write_json(list(
  tifs = as.list(xband_top_bands(from_tifs, "feature_ablation")),
  array = as.list(xband_top_bands(from_array, "feature_ablation")),
  is_data_frame = is.data.frame(from_array), rows = nrow(from_array),
  heatmap_dims = dim(shares), failed = failed
), file.path(work, "result.json"), auto_unbox = TRUE)
"""


def test_r_file_explains_terra_geotiffs_and_r_arrays(tmp_path):
    x_train, y_train = planted_images(n_per_class=80, seed=0)
    net = train_torch(x_train, y_train)
    torch.onnx.export(net, (torch.from_numpy(x_train[:2]),), str(tmp_path / "model.onnx"),
                      dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"},
                                                             "logits": {0: "batch"}})
    x, y = planted_images(n_per_class=10, seed=1)
    np.ascontiguousarray(x, dtype="<f4").tofile(tmp_path / "images.bin")
    (tmp_path / "dims.txt").write_text(" ".join(map(str, x.shape)))
    (tmp_path / "labels.txt").write_text("\n".join(map(str, y)))
    (tmp_path / "run.R").write_text(SCRIPT)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "XBAND_R": str(R_FILE),
           "WORK": str(tmp_path), "CLASSES": ",".join(CLASSES), "BANDS": ",".join(BANDS),
           "HOME": str(tmp_path), "XBAND": str(Path(sys.executable).parent / "xband")}
    done = subprocess.run(["Rscript", str(tmp_path / "run.R")], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    planted = {CLASSES[c]: BANDS[b] for c, b in PLANTED.items()}
    for route in ("tifs", "array"):
        for cls, band in planted.items():
            assert result[route][cls] == band, (route, result[route])
    assert result["is_data_frame"] and result["rows"] > 0
    assert result["heatmap_dims"] == [len(BANDS), N_CLASSES]
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "xband exited with status 2" in result["failed"]
    assert "3 band names given" in result["failed"]
    import rasterio

    first = next((tmp_path / "tifs" / "Water").iterdir())
    with rasterio.open(first) as src:  # what terra wrote: LZW, band names as descriptions
        assert src.profile["compress"] == "lzw" and list(src.descriptions) == BANDS
