# %% [markdown]
# # Hyperspectral: explained by spectral region
#
# A hyperspectral image has hundreds of narrow bands; neighbouring bands carry almost the same
# signal, so a score per band is expensive (a band-removal method needs a pass per band) and
# splits one absorption feature over many bands. xband explains such an image by **spectral
# region**: `regions="auto"` cuts 100 nm windows from the bands' wavelengths, the perturbation
# methods remove whole regions, and the gradient methods' per-band scores are summed per region.
#
# This tutorial uses xband's planted hyperspectral set (`xband.demo.spectra`): 200 bands over
# 400–2500 nm, 8 × 8-pixel images; each class is an absorption dip at a known wavelength (660,
# 1150, 1750, 2250 nm; a fifth class has none), and every image carries one more dip at a
# wavelength no class uses.

# %%
import torch
from IPython.display import display

import xband
from xband.demo.spectra import ABSORPTION_NM, CLASS_NAMES, spectral_images, train_spectral

train_x, train_y, wavelength = spectral_images(n_per_class=40, seed=0)  # (200, 200, 8, 8)
test_x, test_y, _ = spectral_images(n_per_class=4, seed=1)  # (20, 200, 8, 8), labels (20,)
print(f"{len(wavelength)} bands, {wavelength[0]:.0f}–{wavelength[-1]:.0f} nm")

# %% [markdown]
# ## 1. A small CNN
#
# Two convolutions behind a per-band standardisation, fitted full-batch in a few seconds.

# %%
net = train_spectral(train_x, train_y, epochs=60)
with torch.no_grad():
    accuracy = (net(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean()
print(f"held-out accuracy {accuracy:.2f}")

# %% [markdown]
# ## 2. Explain by region
#
# `wavelengths` gives each band's centre in nm (from the command line: `--wavelengths FILE`,
# or read from ENVI headers and GDAL metadata); `regions="auto"` makes the 100 nm windows
# (`--regions auto`; named ranges are possible too, see
# [Spectral regions](../../guide/regions/)).

# %%
model = xband.load_model(net, verbose=False)
result = xband.explain(model, (test_x, test_y), classes=CLASS_NAMES, wavelengths=wavelength,
                       regions="auto", methods=["integrated_gradients", "feature_ablation"],
                       progress=False, seed=0)
print(result.verdict().text())

# %% [markdown]
# Each class's top region by each method, and the dip planted in it:

# %%
planted = {CLASS_NAMES[c]: f"{nm:g} nm" for c, nm in ABSORPTION_NM.items()}
top = result.top_bands()
top.insert(0, "planted dip", top.index.map(lambda name: planted.get(name, "–")))
display(top)

# %% [markdown]
# The regions as windows of bands: `result.members()` maps each region to its bands.

# %%
regions = result.members()
print(f"{len(regions)} regions of {len(wavelength)} bands; the first three:")
{region: f"{bands[0]}…{bands[-1]} ({len(bands)} bands)" for region, bands in list(regions.items())[:3]}

# %% [markdown]
# Band ablation removed one region at a time, not one band. For what that saves at 200 bands,
# by region against band by band, see
# [Hyperspectral cost and windows](../../benchmark/hyperspectral/).
