"""The speed-ups keep the numbers: tuned vs plain forward, batched band perturbations vs Captum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from captum.attr import (
    FeatureAblation,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    Lime,
    Saliency,
    ShapleyValueSampling,
)
from torch import nn

from tests.test_explain import as_loaded
from xband.data.images import image_set
from xband.errors import XbandError
from xband.methods import METHODS, Batch, Context, SharedOutputs, get_method
from xband.methods._base import PassSizes
from xband.methods.shapley import antithetic_orders
from xband.run.forward import (
    ConvActivation,
    check_device,
    forward_module,
    fused_activations,
    relu_after_max_pool,
    tune,
)
from xband.run.pipeline import explain
from xband.run.runner import Donors
from xband.run.tuning import Verdict

N_BANDS, N_CLASSES = 5, 3


def bn_cnn(flatten_with_view: bool = False) -> nn.Module:
    """A random CNN with BatchNorm layers whose running statistics are not the identity."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(N_BANDS, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
            )
            self.head = nn.Linear(8 * 4 * 4, N_CLASSES)

        def forward(self, x):
            h = self.features(x)
            return self.head(h.view(h.shape[0], -1) if flatten_with_view else h.flatten(1))

    net = Net()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def images(n: int = 24, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, N_BANDS, 8, 8)).astype(np.float32),
            np.arange(n) % N_CLASSES)


def as_data(x: np.ndarray, y: np.ndarray):
    return image_set(x, y)


def test_tuned_forward_folds_batchnorm_and_goes_channels_last():
    forward = forward_module(bn_cnn(), "channels_first", "cpu")
    x = torch.from_numpy(images(4)[0])
    fast, applied, notes = tune(forward, x[:2])
    assert applied == ["batchnorm folded into convolutions", "activations fused into convolutions",
                       "channels-last memory"]
    assert notes == []
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert all(not p.requires_grad for p in fast.parameters())
    with torch.no_grad():
        torch.testing.assert_close(fast(x), forward(x), rtol=1e-5, atol=1e-5)


def test_channels_last_is_dropped_with_a_note_when_the_model_cannot_run_it():
    forward = forward_module(bn_cnn(flatten_with_view=True), "channels_first", "cpu")
    fast, applied, notes = tune(forward, torch.from_numpy(images(2)[0]))
    assert applied == ["batchnorm folded into convolutions", "activations fused into convolutions"]
    assert len(notes) == 1 and "channels-last memory not used" in notes[0]
    assert "view" in notes[0]


class ReluPoolNet(nn.Module):
    """Conv-ReLU-MaxPool twice; the second ReLU's output also feeds a skip sum."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(N_BANDS, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.relu, self.pool = nn.ReLU(inplace=True), nn.MaxPool2d(2)
        self.head = nn.Linear(8, N_CLASSES)

    def forward(self, x):
        h = self.pool(self.relu(self.conv1(x)))
        r = torch.relu(self.conv2(h))
        h = self.pool(r) + r[:, :, ::2, ::2]
        return self.head(h.mean(dim=(2, 3)))


def test_relu_moved_after_max_pooling_keeps_every_bit_and_only_where_pooling_is_its_one_use():
    forward = forward_module(ReluPoolNet().eval(), "channels_first", "cpu")
    moved = relu_after_max_pool(forward)
    relus = [n for n in moved.network.graph.nodes if n.target is torch.relu or n.target == "relu"]
    # the first ReLU now runs on pooled values; the second, used twice, stays where it was
    assert [n.args[0].target for n in relus] == ["pool", "conv2"]
    x = torch.from_numpy(images(6)[0]).requires_grad_(True)
    gradients = []
    for net in (forward, moved):
        out = net(x)
        gradients.append(torch.autograd.grad(out[:, 1].sum(), x)[0])
        assert torch.equal(out, forward(x))
    assert torch.equal(*gradients)
    _, applied, _ = tune(forward, x.detach()[:2])  # conv1's ReLU is computed inside it instead
    assert "activations fused into convolutions" in applied
    assert "ReLU after max-pooling" not in applied


class ConvActivationNet(nn.Module):
    """Convolutions followed by a ReLU, a ReLU6 (strided, grouped) and, for the last one, a ReLU
    that is not its only use."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(N_BANDS, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, stride=2, groups=4)
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.relu, self.relu6 = nn.ReLU(), nn.ReLU6()
        self.head = nn.Linear(8, N_CLASSES)

    def forward(self, x):
        h = self.relu6(self.conv2(self.relu(self.conv1(x))))
        g = self.conv3(h)
        return self.head((self.relu(g) + g).mean(dim=(2, 3)))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fused_convolution_activations_keep_every_bit_of_outputs_and_gradients(memory_format):
    forward = forward_module(ConvActivationNet().eval(), "channels_first", "cpu")
    fused = fused_activations(forward)
    assert sum(isinstance(m, ConvActivation) for m in fused.modules()) == 2  # not conv3: used twice
    x = torch.from_numpy(images(6)[0]).contiguous(memory_format=memory_format)
    x.requires_grad_(True)
    results = []
    for net in (forward, fused):
        out = net(x)
        results.append((out, torch.autograd.grad(out[:, 1].sum(), x)[0]))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    with torch.inference_mode():
        assert torch.equal(fused(x), results[0][0])


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_global_max_pool_keeps_amax_values_and_shares_the_gradient_among_ties(memory_format):
    """Keras GlobalMaxPooling2D converted: max-pooling's kernel forward in the input's own
    layout, and torch.amax's gradient (shared equally among tied maxima, as TensorFlow's is),
    bit for bit; the gradient stays in the input's layout."""
    from converters.extra_ops import GlobalMaxPool

    x = torch.randn(6, 5, 7, 6, generator=torch.Generator().manual_seed(0))
    x[0, 0] = 1.0  # every pixel tied
    x[1, 1, :2, :2] = 9.0  # four tied at the top
    x = x.contiguous(memory_format=memory_format).requires_grad_(True)
    grad = torch.randn(6, 5, 1, 1, generator=torch.Generator().manual_seed(1))
    ours = GlobalMaxPool()(x)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    amax = torch.amax(x, dim=(2, 3), keepdim=True)
    (amax_grad,) = torch.autograd.grad(amax, x, grad)
    assert torch.equal(ours, amax) and torch.equal(ours_grad, amax_grad)
    assert torch.equal(ours_grad[1, 1, :2, :2], grad[1, 1].expand(2, 2) / 4)
    assert ours_grad.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("method", list(METHODS))
def test_tuned_run_gives_the_plain_run_scores(method, monkeypatch):
    import xband.run.pipeline

    monkeypatch.setattr(xband.run.pipeline, "SPEED_UP_COST_S", 0.0)  # tune even this short run

    monkeypatch.setattr(xband.run.pipeline, "timing_size", lambda seconds, budget: 8)
    monkeypatch.setattr(xband.run.pipeline, "speed_ups_pay",
                        lambda plain, sped_up: Verdict(True, steady=False))  # used
    model = as_loaded(bn_cnn(), N_BANDS, N_CLASSES)
    data = as_data(*images())
    runs = {tuned: explain(model, data, methods=[method], progress=False, n_boot=10, seed=5,
                           batch_size=8, tuned=tuned) for tuned in (True, False)}
    assert runs[True].summary["settings"]["speed_ups"] == [
        "batchnorm folded into convolutions", "activations fused into convolutions",
        "channels-last memory"]
    assert runs[False].summary["settings"]["speed_ups"] == []
    tuned, plain = runs[True].scores[method], runs[False].scores[method]
    scale = np.abs(plain).max()
    assert scale > 0
    np.testing.assert_allclose(tuned, plain, rtol=1e-3, atol=1e-4 * scale)


def context(forward: nn.Module, baseline: torch.Tensor, features: torch.Tensor | None = None,
            donors=None) -> Context:
    return Context(forward=forward, baseline=baseline, band_std=torch.ones(N_BANDS),
                   donors=donors, features=features, passes=PassSizes(forward=3, gradient=3))


@pytest.mark.parametrize(("method", "captum"), [("saliency", Saliency),
                                                ("input_x_gradient", InputXGradient)])
def test_gradients_in_passes_equal_captum(method, captum):
    forward = forward_module(bn_cnn(), "channels_first", "cpu")
    x = torch.from_numpy(images(7)[0])
    target = torch.arange(7) % N_CLASSES
    options = {"abs": True} if method == "saliency" else {}
    want = captum(forward).attribute(x, target=target, **options)
    got = get_method(method).attribute(Batch(x=x, target=target, label=target,
                                             index=np.arange(7)),
                                       context(forward, torch.zeros(1, N_BANDS, 1, 1)))
    torch.testing.assert_close(got.maps, want, rtol=1e-5, atol=1e-6)


def test_integrated_gradients_in_blocks_equal_captum():
    forward = forward_module(bn_cnn(), "channels_first", "cpu")
    x = torch.from_numpy(images(7)[0])
    target = torch.arange(7) % N_CLASSES
    baseline = torch.linspace(-1, 1, N_BANDS).view(1, -1, 1, 1)
    want = IntegratedGradients(forward).attribute(x, baselines=baseline.expand(1, -1, 8, 8),
                                                  target=target, n_steps=10)
    got = get_method("integrated_gradients", n_steps=10).attribute(
        Batch(x=x, target=target, label=target, index=np.arange(7)), context(forward, baseline))
    torch.testing.assert_close(got.maps, want, rtol=1e-4, atol=1e-6)


def test_gradient_shap_equals_captum_on_a_linear_model_with_one_donor():
    """With one donor image b and a linear model every draw gives w·(x − b): no sampling noise."""
    torch.manual_seed(0)
    forward = forward_module(nn.Sequential(nn.Conv2d(N_BANDS, N_CLASSES, 1), nn.AdaptiveAvgPool2d(1),
                                           nn.Flatten()), "channels_first", "cpu")
    x = torch.from_numpy(images(5)[0])
    donor = torch.from_numpy(images(1, seed=9)[0])
    target = torch.arange(5) % N_CLASSES
    want = GradientShap(forward).attribute(x, baselines=donor.expand(4, -1, -1, -1),
                                           target=target, n_samples=6)
    got = get_method("gradient_shap", n_samples=6).attribute(
        Batch(x=x, target=target, label=target, index=np.arange(5)),
        context(forward, torch.zeros(1, N_BANDS, 1, 1),
                donors=lambda index, repeat: donor.expand(len(index), -1, -1, -1)))
    assert want.abs().max() > 0
    torch.testing.assert_close(got.maps, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("features", [None, torch.tensor([0, 1, 1, 2, 0])])
def test_band_ablation_equals_captum_feature_ablation(features):
    forward = forward_module(bn_cnn(), "channels_first", "cpu")
    x = torch.from_numpy(images(10)[0])
    target = torch.arange(10) % N_CLASSES
    baseline = torch.linspace(-1, 1, N_BANDS).view(1, -1, 1, 1)
    ids = torch.arange(N_BANDS) if features is None else features
    mask = ids.view(1, -1, 1, 1).expand(1, N_BANDS, 8, 8).contiguous()
    want = FeatureAblation(forward).attribute(x, baselines=baseline.expand(1, -1, 8, 8),
                                              target=target, feature_mask=mask)
    first = [int(torch.nonzero(ids == f)[0]) for f in range(int(ids.max()) + 1)]
    got = get_method("feature_ablation").attribute(
        Batch(x=x, target=target, label=target, index=np.arange(10)),
        context(forward, baseline, features))
    np.testing.assert_allclose(got.scores, want[:, first, 0, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_sampled_shapley_equals_captum_shapley_value_sampling_on_the_same_orders():
    """Each image has its own band orders; Captum, given them, gives the same values."""
    forward = forward_module(bn_cnn(), "channels_first", "cpu")
    x = torch.from_numpy(images(6)[0])
    target = torch.arange(6) % N_CLASSES
    baseline = torch.zeros(1, N_BANDS, 1, 1)
    mask = torch.arange(N_BANDS).view(1, -1, 1, 1).expand(1, N_BANDS, 8, 8).contiguous()
    torch.manual_seed(11)
    orders = antithetic_orders(6, N_BANDS, 7)
    assert (orders[:, 1] == orders[:, 0].flip(1)).all() and orders.shape == (6, 7, N_BANDS)
    assert not (orders[0] == orders[1]).all()  # not the same orders for every image
    captum = ShapleyValueSampling(forward)
    want = []
    for i in range(6):
        captum.permutation_generator = lambda n_features, n_samples, i=i: iter(orders[i].tolist())
        want.append(captum.attribute(x[i:i + 1], baselines=0.0, target=target[i:i + 1],
                                     feature_mask=mask, n_samples=7)[:, :, 0, 0])
    torch.manual_seed(11)
    got = get_method("shapley", max_exact_bands=2, n_samples=7).attribute(
        Batch(x=x, target=target, label=target, index=np.arange(6)), context(forward, baseline))
    np.testing.assert_allclose(got.scores, torch.cat(want).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("features", [None, torch.tensor([0, 1, 1, 2, 0])])
@pytest.mark.parametrize(("method", "captum"), [("lime", Lime), ("kernel_shap", KernelShap)])
def test_batched_surrogates_equal_captum_one_image_at_a_time(method, captum, features):
    """Given the same band subsets, the batched surrogates are Captum's, image by image."""
    forward = forward_module(bn_cnn(), "channels_first", "cpu")
    n = 5
    x = torch.from_numpy(images(n)[0])
    target = torch.arange(n) % N_CLASSES
    baseline = torch.linspace(-1, 1, N_BANDS).view(1, -1, 1, 1)
    ids = torch.arange(N_BANDS) if features is None else features
    n_feat = int(ids.max()) + 1
    mask = ids.view(1, -1, 1, 1).expand(1, N_BANDS, 8, 8).contiguous()
    first = [int(torch.nonzero(ids == f)[0]) for f in range(n_feat)]
    chosen = get_method(method, n_samples=40)
    ctx = context(forward, baseline, features)
    torch.manual_seed(3)
    got = chosen.attribute(Batch(x=x, target=target, label=target, index=np.arange(n)), ctx)
    torch.manual_seed(3)  # the subsets the batched run drew: they come first
    subsets, _ = chosen.subsets(n, n_feat, ctx)
    want = []
    for i in range(n):
        explainer = captum(forward)
        explainer.perturb_func = lambda *args, _rows=subsets[i], **kwargs: (
            (yield from _rows.split(1)))
        want.append(explainer.attribute(x[i:i + 1], baselines=baseline.expand(1, -1, 8, 8),
                                        target=int(target[i]), feature_mask=mask, n_samples=40))
    want = torch.cat(want)[:, first, 0, 0].numpy()
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got.scores, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_background", [1, 4])
def test_kernel_shap_subsets_follow_captums_shapley_kernel_in_complementary_pairs(n_background):
    """All bands, none (against each background image), then complementary pairs drawn by the
    Shapley kernel, a pair against one background drawn uniformly."""
    n_feat = 6
    ctx = dataclasses.replace(context(nn.Identity(), torch.zeros(1, n_feat, 1, 1)),
                              background=0 if n_background == 1 else n_background)
    draws, pick = get_method("kernel_shap", n_samples=52).subsets(400, n_feat, ctx)
    ends = 1 + n_background
    assert draws.shape == (400, 52 + n_background - 1, n_feat) and pick.shape == draws.shape[:2]
    assert torch.equal(draws[:, 0], torch.ones(400, n_feat))
    assert torch.equal(draws[:, 1:ends], torch.zeros(400, n_background, n_feat))
    assert torch.equal(pick[:, 1:ends], torch.arange(n_background).expand(400, -1))
    assert torch.equal(pick[:, ends::2], pick[:, ends + 1::2])  # a pair shares its background
    used = torch.bincount(pick[:, ends:].flatten(), minlength=n_background).float()
    torch.testing.assert_close(used / used.sum(), torch.full((n_background,), 1 / n_background),
                               rtol=0, atol=0.01)
    draws = torch.cat([draws[:, :2], draws[:, ends:]], dim=1)
    assert torch.equal(draws[:, 2::2] + draws[:, 3::2], torch.ones(400, 25, n_feat))
    sizes = draws[:, 2:].sum(dim=2).flatten().long()
    k = torch.arange(1, n_feat, dtype=torch.float)
    expected = (n_feat - 1) / (k * (n_feat - k))
    observed = torch.bincount(sizes, minlength=n_feat)[1:].float() / len(sizes)
    torch.testing.assert_close(observed, expected / expected.sum(), rtol=0, atol=0.01)
    # every feature equally likely within a size
    torch.testing.assert_close(draws[:, 2:].mean(dim=(0, 1)), torch.full((n_feat,), 0.5),
                               rtol=0, atol=0.01)
    assert KernelShap(nn.Identity()).inf_weight == get_method("kernel_shap").ENDS_WEIGHT


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_says_what_to_do():
    with pytest.raises(XbandError, match="no CUDA GPU.*device='cpu'") as err:
        check_device("cuda")
    assert err.value.cli.endswith("or use --device cpu.")  # the command line names its flag
    model = as_loaded(bn_cnn(), N_BANDS, N_CLASSES)
    with pytest.raises(XbandError, match="no CUDA GPU"):
        explain(model, as_data(*images()), methods="saliency", progress=False, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", list(METHODS))
def test_cuda_run_gives_the_cpu_scores(method):
    model = as_loaded(bn_cnn(), N_BANDS, N_CLASSES)
    data = as_data(*images())
    cpu, gpu = (explain(model, data, methods=[method], progress=False, n_boot=10, seed=5,
                        batch_size=8, device=device).scores[method] for device in ("cpu", "cuda"))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4 * np.abs(cpu).max())


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_shap", "shapley",
                                    "kernel_shap"])
def test_pass_sizes_change_the_numbers_only_at_float_rounding(method):
    """Sums over steps and samples run in one order whatever the pass size; what remains is the
    network's own rounding, which can differ with the batch a pass holds."""
    forward = forward_module(bn_cnn(), "channels_first", "cpu")
    x = torch.from_numpy(images(12)[0])
    target = torch.arange(12) % N_CLASSES
    donors = torch.from_numpy(images(12, seed=4)[0])
    scores = []
    for size in (3, 12, 48):
        ctx = Context(forward=forward, baseline=torch.zeros(1, N_BANDS, 1, 1),
                      band_std=torch.ones(N_BANDS), donors=lambda index, repeat: donors[index],
                      passes=PassSizes(forward=size, gradient=size))
        torch.manual_seed(0)
        scores.append(get_method(method).attribute(
            Batch(x=x, target=target, label=target, index=np.arange(12)), ctx).scores)
    for other in scores[1:]:
        np.testing.assert_allclose(other, scores[0], rtol=1e-5, atol=1e-6 * np.abs(scores[0]).max())


def test_methods_on_one_batch_share_masked_copies_and_keep_their_numbers():
    """With one background image, band ablation, permutation, sampled Shapley and KernelSHAP ask
    for some of the same masked copies of an image (all bands, all but one, none, one): with the
    batch's shared outputs each copy goes through the network once, and every method's scores
    are those it gives alone."""
    forward = forward_module(bn_cnn(), "channels_first", "cpu")
    seen = []
    forward.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    x = torch.from_numpy(images(12)[0])
    target = torch.arange(12) % N_CLASSES
    donors = torch.from_numpy(images(12, seed=4)[0])
    ctx = Context(forward=forward, baseline=torch.zeros(1, N_BANDS, 1, 1),
                  band_std=torch.ones(N_BANDS), background=1, passes=PassSizes(7, 7),
                  donors=lambda index, repeat: donors[(index + repeat) % 12])
    methods = [get_method("feature_ablation"), get_method("permutation", n_repeats=1),
               get_method("shapley", n_samples=2, max_exact_bands=4), get_method("kernel_shap", n_samples=16)]

    def run(method, shared):
        torch.manual_seed(0)
        batch = Batch(x=x, target=target, label=target, index=np.arange(12), shared=shared)
        return method.attribute(batch, ctx).scores

    alone, evaluated = {}, {}
    for method in methods:
        shared = SharedOutputs()
        alone[method.name] = run(method, shared)
        evaluated[method.name] = shared.evaluated
    # Shapley's two orders both end with every band: that copy is made once
    assert evaluated["shapley"] == 12 * 2 * N_BANDS
    seen.clear()
    shared = SharedOutputs()
    together = {method.name: run(method, shared) for method in methods}
    assert sum(seen) == shared.evaluated  # each copy through the network once
    # permutation's copies (all bands; all but one, from donor repeat 0) are band ablation's
    assert shared.evaluated <= sum(evaluated.values()) - evaluated["permutation"]
    for name, scores in alone.items():
        np.testing.assert_allclose(together[name], scores, rtol=1e-5,
                                   atol=1e-6 * np.abs(scores).max())


def test_donors_of_a_batch_are_read_once_for_every_method_that_asks():
    """Band ablation, Shapley, LIME, … on bands and on band groups each ask for the batch's
    donor images: they are read from the data once, and each repeat and batch gets its own."""
    reads = []

    def take(positions):
        reads.append(positions.copy())
        return torch.from_numpy(positions.astype(np.float32))

    donors = Donors(50, seed=3, take=take)
    first, again = donors(np.arange(8), 0), donors(np.arange(8), 0)
    assert again is first and len(reads) == 1
    other_repeat, other_batch = donors(np.arange(8), 1), donors(np.arange(8, 16), 0)
    assert len(reads) == 3 and not torch.equal(other_repeat, first)
    assert torch.equal(other_batch, take(donors.order(0)[np.arange(8, 16)]))
    for start in range(0, 8 * Donors.KEPT, 8):  # older batches are let go
        donors(np.arange(start, start + 8) % 50, 2)
    reads.clear()
    donors(np.arange(8), 0)
    assert len(reads) == 1


@pytest.mark.parametrize(("setting", "torch_first", "spin"), [
    ({}, False, "10000"), ({"OMP_WAIT_POLICY": "PASSIVE"}, False, "None"),
    ({"GOMP_SPINCOUNT": "5"}, False, "5"), ({}, True, "None")],
    ids=["default", "user's policy", "user's spin count", "torch loaded before"])
def test_torch_threads_spin_briefly_unless_the_user_or_torch_decided_first(
        setting, torch_first, spin):
    """OpenMP reads its wait settings once, when torch loads: `import xband` sets a short spin
    before that, and leaves a policy or spin count the user chose, or a torch already loaded,
    alone."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = ("import torch; " if torch_first else "") + (
        "import os, xband; print(os.environ.get('GOMP_SPINCOUNT'))")
    out = subprocess.run([sys.executable, "-c", code], env={**env, **setting},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == spin


@pytest.mark.parametrize(("others", "threads"), [(None, 2), (0, 2), (1, 1), (5, 1)])
def test_a_run_takes_only_the_cores_other_processes_leave_free(monkeypatch, others, threads):
    """A busy machine: torch runs with the free cores (at least one) for the run, says so in
    the run's notes, and has its own number of threads back afterwards."""
    from xband.run import threads as run_threads

    before = torch.get_num_threads()
    monkeypatch.setattr(run_threads, "others_running", lambda: others)
    monkeypatch.setattr(run_threads, "usable_cores", lambda: 2)
    torch.set_num_threads(2)
    try:
        with run_threads.threads_for_the_load() as note:
            assert torch.get_num_threads() == threads
            assert (note is None) == (threads == 2)
            if note is not None:
                assert note.startswith("speed: 1 torch thread instead of 2")
            with run_threads.threads_for_the_load() as inner:  # nested: the outer one decides
                assert inner is None and torch.get_num_threads() == threads
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
