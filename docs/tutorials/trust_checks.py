# %% [markdown]
# # Compare methods, read the trust checks
#
# Attribution methods disagree, and some give a ranking that does not depend on what the model
# learned. xband does not ask you to pick a method on faith: it runs several and **checks each
# on your model and data** — does its ranking change when the model's weights are randomised,
# does removing bands in its order hurt the model more than removing them in random orders —
# and the verdict keeps only the methods that pass.
#
# This tutorial uses the demo's Keras model and synthetic Sentinel-2 patches, in which each
# class is marked in known bands: Water **B02**, Crop **B05**, Forest **B08**, Bare soil
# **B11**, Urban **B04 + B12**.

# %%
from IPython.display import display

import xband
from xband.demo import CLASS_NAMES, MODEL_PATH, demo_data

images, labels = demo_data(n_per_class=5, seed=3)  # (25, 32, 32, 13) bands last, labels (25,)
data = xband.image_set(images, labels, sensor="sentinel2", classes=CLASS_NAMES)
model = xband.load_model(MODEL_PATH, verbose=False)

# %% [markdown]
# ## 1. Several methods, one answer each
#
# Five methods of the ten: raw and scaled saliency and Input × Gradient (one gradient each),
# Integrated Gradients (a path of gradients from other images' bands) and band ablation (each
# band replaced by another image's, the drop in the class's logit measured).

# %%
methods = ["saliency", "scaled_saliency", "input_x_gradient", "integrated_gradients",
           "feature_ablation"]
result = xband.explain(model, data, methods=methods, progress=False, seed=0)
display(result.top_bands())

# %% [markdown]
# Without checks, the verdict counts every method and says so:

# %%
print(result.verdict().text())

# %% [markdown]
# ## 2. The checks
#
# `xband.evaluate` (`xband explain … --evaluate` on the command line) runs them with the same
# methods and settings. Here on every image (25), with the data baseline only and two stages of
# randomisation, to keep this page quick; the defaults check up to 128 images under four
# baselines.

# %%
evaluation = xband.evaluate(model, data, result, max_images=25, baselines="data",
                            cascade_stages=2)
result.evaluation = evaluation
print("flagged by model randomisation:", evaluation.flagged or "none")

# %% [markdown]
# **Model randomisation**: Spearman's ρ between each method's band ranking on the trained model
# and on the model with its layers re-drawn, from the output layer down. A method whose ranking
# survives with every layer random (ρ ≥ 0.5) is explaining the data, not the model, and is
# flagged.

# %%
display(evaluation.randomisation.head(10))

# %% [markdown]
# **Band deletion**: per class, the bands are removed in each method's order and in 10 random
# orders; a faithful order makes the model's score fall faster. `gap` compares the areas under
# the curves (> 0: better than random).

# %%
display(evaluation.faithfulness.head(10))

# %% [markdown]
# ## 3. The verdict from the methods that passed
#
# With the checks attached, the verdict uses only the methods that pass both and names every
# method it left out, with the reason.

# %%
verdict = result.verdict()
print(verdict.text())
display(verdict.excluded)

# %% [markdown]
# Passing the checks is necessary, not sufficient. Look back at the first table: raw saliency
# puts B10 first for every class. B10 (cirrus) barely varies in these images, so a small change
# in it is a large change in units of its own spread: the raw gradient measures sensitivity per
# unit of the band's values, not the band's effect (the *raw-gradient trap*; scaled saliency
# multiplies by each band's spread). The verdict counts saliency as one vote of five, so the
# answer per class stands, and "then B10" in a sentence is worth a second look.

# %% [markdown]
# How each check is computed and what its threshold means:
# [Trust checks and the verdict](../../guide/trust/). How well each method finds bands known to
# matter, over five planted tasks: [Known answers](../../benchmark/planted/).
