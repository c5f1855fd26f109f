# %% [markdown]
# # A Keras model on GeoTIFF folders
#
# The most common starting point: a classifier trained in Keras (from Python or from R) and
# image patches stored as GeoTIFFs, one folder per class, as EuroSAT-MS ships them. This
# tutorial explains such a model twice, from the command line and from Python, and reads the
# answer.
#
# It uses the demo's Keras model (`xband/demo/assets/demo_model.keras`: 13 Sentinel-2 bands,
# five classes) and writes its GeoTIFF folders from the demo's synthetic patches, in which each
# class is marked by a bright blob in known bands: Water **B02**, Crop **B05**, Forest **B08**,
# Bare soil **B11**, Urban **B04 + B12**. With your own model and folders, skip the first step.

# %%
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import rasterio
from IPython.display import Image

import xband
from xband.demo import BAND_NAMES, CLASS_NAMES, MODEL_PATH, demo_data

work = Path(tempfile.mkdtemp(prefix="xband-tutorial-"))

# %% [markdown]
# ## 1. GeoTIFF folders, one per class
#
# Each patch is a 32 × 32 GeoTIFF of 13 float32 bands, LZW-compressed (as GDAL, rasterio and
# R's terra write by default), each band described by its name. xband reads the folder names
# as the class names.

# %%
images, labels = demo_data(n_per_class=10, seed=5)  # (50, 32, 32, 13) bands last, labels (50,)
patches = work / "patches"
for i, (image, label) in enumerate(zip(images, labels, strict=True)):
    folder = patches / CLASS_NAMES[label]
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(folder / f"patch_{i:03d}.tif", "w", driver="GTiff", compress="lzw",
                       width=32, height=32, count=13, dtype="float32") as tif:
        tif.write(image.transpose(2, 0, 1))  # GeoTIFFs store bands first
        for band, name in enumerate(BAND_NAMES, start=1):
            tif.set_band_description(band, name)

sorted(p.name for p in patches.iterdir()), len(list(patches.rglob("*.tif")))

# %% [markdown]
# ## 2. From the command line
#
# The command, as you would type it in a shell:
#
# ```bash
# xband explain --model demo_model.keras --data patches/ --sensor sentinel2 \
#     --classes "Water,Crop,Forest,Bare soil,Urban" \
#     --methods scaled_saliency,integrated_gradients,feature_ablation --out report/
# ```
#
# - `--sensor sentinel2` names the bands in file order and adds their wavelengths and spectral
#   groups (`xband sensors` lists the presets).
# - `--classes` gives the class names **in the model's output order**. Folder names are sorted
#   alphabetically, which is not the order this model was trained in; without `--classes` xband
#   notices that the predictions fit another order far better and stops, naming the order that
#   fits.
# - `--methods` picks three of the ten methods to keep this quick; leave it out for all ten.
#
# The first run converts the Keras model (Keras → ONNX → PyTorch, in a separate process) and
# checks that the converted network computes the same logits and input gradients; the result
# is cached by the file's hash. Here the command runs from Python, with this environment's
# `xband`:


# %%
def shell(*command: str) -> None:
    """Run an `xband …` command of this Python environment, print what it prints, stop on
    failure."""
    print("$ " + " ".join(command))
    done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True)
    print(done.stdout + done.stderr)
    done.check_returncode()


report = work / "report"
shell("xband", "explain", "--model", str(MODEL_PATH), "--data", str(patches),
      "--sensor", "sentinel2", "--classes", ",".join(CLASS_NAMES),
      "--methods", "scaled_saliency,integrated_gradients,feature_ablation",
      "--out", str(report), "--quiet")

# %% [markdown]
# The printed summary starts with the **verdict**: per class, the band that most methods put
# first. The methods were not checked here (see the tutorial on trust checks for `--evaluate`).
#
# ## 3. Reading the report folder
#
# `report/report.html` shows everything on one page. The same answers are in plain files:

# %%
sorted(p.name for p in report.iterdir())

# %%
summary = json.loads((report / "summary.json").read_text())
for line in summary["verdict"]["classes"]:
    print(line["sentence"])

# %% [markdown]
# `importance.csv` is the tidy table behind every figure: one row per method, grouping, class
# and band, with the mean score, its 95% bootstrap interval, the share of |score| and the rank.
# Here, each method's top band per class:

# %%
importance = pd.read_csv(report / "importance.csv")
top = importance[(importance["grouping"] == "true_class") & (importance["rank"] == 1)]
top.pivot(index="class", columns="method", values="band").loc[CLASS_NAMES]

# %% [markdown]
# The band × class heat map of band ablation (share of |score| per class; a box marks each
# class's top band), one of the report's figures:

# %%
Image(filename=report / "figures" / "heatmap_feature_ablation.png", width=640)

# %% [markdown]
# ## 4. The same from Python
#
# `xband.read_data` opens the folder the way `--data` does and returns a checked `ImageSet`;
# `xband.load_model` converts the model (from the cache now) and measures its fidelity;
# `xband.explain` returns an `Explanation` with pandas tables and matplotlib figures.

# %%
model = xband.load_model(MODEL_PATH)
data = xband.read_data(patches, sensor="sentinel2", classes=CLASS_NAMES)
result = xband.explain(model, data, methods=["scaled_saliency", "integrated_gradients",
                                             "feature_ablation"], progress=False)
print(result.verdict().text())

# %%
result.top_bands()

# %% [markdown]
# `result.table(method)` is one method's rows of the importance table; per class and band: the
# score, its interval, the share and the number of images.

# %%
table = result.table("integrated_gradients")
table[table["grouping"] == "true_class"].sort_values(["class", "rank"]).head(6)

# %% [markdown]
# `result.save("report/")` writes the same folder as the command line. Every method puts the
# planted bands first; see [Methods and what a score means](../../guide/methods/) for what
# each method's score measures, and [Your data](../../guide/data/) for the other readers.
