# %% [markdown]
# # A timm model on a torch dataset
#
# If you train in PyTorch, your images are already behind a `torch.utils.data.Dataset` and your
# classifier is an `nn.Module`, often made by [timm](https://huggingface.co/docs/timm) or
# [torchgeo](https://torchgeo.readthedocs.io) (whose models are timm models with pretrained
# multispectral weights). xband takes both as they are: no file to export, no array to build.
#
# So that this page runs anywhere without a download, it makes its own small data set (the
# demo's synthetic Sentinel-2 patches: each class bright in known bands, Water **B02**, Crop
# **B05**, Forest **B08**, Bare soil **B11**, Urban **B04 + B12**) and trains a small timm ResNet
# on it for a few seconds. With your own data set and trained model, start at step 3.

# %%
import time

import timm
import torch
from torch.utils.data import DataLoader, Dataset

import xband
from xband.demo import BAND_NAMES, CLASS_NAMES, demo_data

torch.manual_seed(0)


# %% [markdown]
# ## 1. A torch dataset, torchgeo style
#
# Items are dicts with an `"image"` tensor, bands first `(bands, height, width)`, and a
# `"label"` class number, as torchgeo's classification data sets give them; tuples
# `(image, label)` work as well. torchgeo data sets also carry `classes` and `bands`: xband reads
# the class and band names from them when they are there.
#
# The images are standardised per band here, as the model is trained on them; xband explains
# the model on the images as the data set gives them, so nothing needs to be told twice.

# %%
class Patches(Dataset):
    """Multispectral patches with one class label each, standardised per band (as a torchgeo
    transform would) with the training set's mean and spread."""

    classes = CLASS_NAMES
    bands = BAND_NAMES

    def __init__(self, n_per_class: int, seed: int, stats: tuple | None = None) -> None:
        images, labels = demo_data(n_per_class=n_per_class, seed=seed)  # (N, 32, 32, 13), (N,)
        self.stats = stats or (images.mean((0, 1, 2)), images.std((0, 1, 2)))  # (13,), (13,)
        images = (images - self.stats[0]) / self.stats[1]
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, 13, 32, 32)
        self.labels = torch.from_numpy(labels).long()  # (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i]}


train = Patches(n_per_class=60, seed=1)
test = Patches(n_per_class=6, seed=2, stats=train.stats)
len(train), len(test), train[0]["image"].shape

# %% [markdown]
# ## 2. A timm model, trained briefly
#
# `timm.create_model` builds any of its architectures for 13 input bands (`in_chans`). A
# torchgeo model (`torchgeo.models.resnet18(weights=...)`) is made the same way and loads the
# same.

# %%
model = timm.create_model("resnet10t", in_chans=13, num_classes=len(CLASS_NAMES))
optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
start = time.perf_counter()
model.train()
for _epoch in range(3):
    for batch in DataLoader(train, batch_size=30, shuffle=True):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"])
        loss.backward()
        optimiser.step()
model.eval()
with torch.no_grad():
    accuracy = (model(test.images).argmax(1) == test.labels).float().mean().item()
print(f"trained in {time.perf_counter() - start:.0f} s; test accuracy {accuracy:.2f}")

# %% [markdown]
# ## 3. Explain it
#
# `xband.load_model` takes the module itself and checks it like any other model (its layout,
# its output); `xband.from_torch` reads the data set by index, so images are loaded only as the
# methods need them. `explain` could take the data set directly, too.

# %%
loaded = xband.load_model(model)
data = xband.from_torch(test, sensor="sentinel2")
result = xband.explain(loaded, data, methods=["integrated_gradients", "feature_ablation"],
                       progress=False, seed=0)
print(result.verdict().text())

# %% [markdown]
# The sensor preset checked the data set's band names against Sentinel-2's and added each band's
# spectral group and wavelength to the sentences. Each method's top bands per class:

# %%
result.top_bands()

# %% [markdown]
# With a model this small and this little training, the answer is worth checking before it is
# believed: `xband.evaluate(loaded, data, result)` runs the trust checks
# ([Trust checks and the verdict](../../guide/trust/)). `result.save("report/")` writes the
# report folder, as `xband explain` does.
