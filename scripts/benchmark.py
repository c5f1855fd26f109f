"""Speed of band importance: xband vs the cost floor, naive Captum and TensorFlow.

    python scripts/benchmark.py [--models small,mobilenetv2,resnet50] [--images 64]
                                [--methods saliency,integrated_gradients,feature_ablation]
                                [--out benchmark.json]

For each model (64×64×13 inputs and 10 classes; "bn", the Conv-BN-MaxPool-GAP CNN of issue 12,
24×24×10 and 4 classes; weights=None; converted by xband) and method:
- xband: images per second of `xband.explain` for that method alone on every image (method
  time only), after a warm-up run of the method on one image per class (the first passes of a
  new shape are slow), best of 2 runs; and the run's end-to-end wall time, tuning included
  (each run measures its pass sizes afresh, from an empty tuning cache);
- floor: passes per image × time per pass at the best batch size (forward, or forward+backward
  for gradient methods) of the same tuned network xband runs, after warm-up; efficiency =
  floor time / xband time;
- naive: Captum called one image at a time with its default batching, same method settings, on
  the network as converted (no speed-ups);
- TensorFlow (saliency, integrated gradients, band ablation): the same computations written with
  `tf.GradientTape` inside `tf.function` on the original Keras model, batched, in its own process.
Every time is the best of its repeats (the machine is shared and noisy: best-of is the stable
statistic). Prints a markdown table and writes JSON. Compare numbers only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHAPES = {"small": (64, 64, 13, 10), "bn": (24, 24, 10, 4), "mobilenetv2": (64, 64, 13, 10),
          "resnet50": (64, 64, 13, 10)}  # height, width, bands, classes
GRADIENT_METHODS = {"saliency", "scaled_saliency", "input_x_gradient", "integrated_gradients",
                    "gradient_shap"}
TF_METHODS = ("saliency", "integrated_gradients", "feature_ablation")

BUILD_AND_TIME_TF = """
import json, sys, time
import numpy as np
import keras, tensorflow as tf

folder, shapes, n_images, n_steps = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
keras.utils.set_random_seed(0)

def build(name):
    if name == "bn":
        return keras.Sequential([
            keras.Input((H, W, B)),
            keras.layers.Conv2D(32, 3, padding="same"), keras.layers.BatchNormalization(),
            keras.layers.ReLU(), keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(C, activation="softmax")])
    if name == "small":
        return keras.Sequential([
            keras.Input((H, W, B)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(C, activation="softmax")])
    app = {"mobilenetv2": keras.applications.MobileNetV2,
           "resnet50": keras.applications.ResNet50}[name]
    return app(weights=None, input_shape=(H, W, B), classes=C)

results = {}
for name, (H, W, B, C) in shapes.items():
    x = np.random.default_rng(0).uniform(0, 1, (n_images, H, W, B)).astype("float32")
    baseline = x.mean(axis=(0, 1, 2), keepdims=True)
    model = build(name)
    model.save(f"{folder}/{name}.keras")

    @tf.function(reduce_retracing=True)
    def gradient(points, t):
        with tf.GradientTape() as tape:
            tape.watch(points)
            score = tf.reduce_sum(tf.gather(model(points, training=False), t, batch_dims=1))
        return tape.gradient(score, points)

    def saliency(xb, t):
        return tf.reduce_mean(tf.abs(gradient(xb, t)), axis=(1, 2))

    def integrated_gradients(xb, t):
        total = tf.zeros_like(xb)
        for i in range(n_steps):  # one batched gradient per step, midpoint rule
            total += gradient(baseline + (i + 0.5) / n_steps * (xb - baseline), t)
        return tf.reduce_sum(total / n_steps * (xb - baseline), axis=(1, 2))

    @tf.function(reduce_retracing=True)
    def feature_ablation(xb, t):
        full = tf.gather(model(xb, training=False), t, batch_dims=1)
        eye = tf.eye(B)[:, None, None, None, :]  # (B, 1, 1, 1, B): band b at its baseline
        ablated = xb[None] * (1 - eye) + baseline * eye  # (B, N, H, W, B)
        out = tf.reshape(model(tf.reshape(ablated, (-1, H, W, B)), training=False), (B, -1, C))
        return full[None] - tf.gather(out, tf.tile(t[None], (B, 1)), batch_dims=2)

    fns = {"saliency": (saliency, 32), "integrated_gradients": (integrated_gradients, 32),
           "feature_ablation": (feature_ablation, 16)}
    target = tf.constant(np.zeros(n_images, dtype=np.int32))
    results[name] = {}
    for method, (fn, batch) in fns.items():
        def run():
            for s in range(0, n_images, batch):
                fn(tf.constant(x[s:s + batch]), target[s:s + batch]).numpy()
        run()  # trace and warm up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        results[name][method] = n_images / min(times)
json.dump(results, open(f"{folder}/tf.json", "w"))
"""


def tensorflow_side(folder: Path, models: list[str], n_images: int, n_steps: int) -> dict:
    """Build the Keras models and time the TensorFlow implementations, in a separate process."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BUILD_AND_TIME_TF), str(folder),
         json.dumps({m: SHAPES[m] for m in models}), str(n_images), str(n_steps)],
        capture_output=True, text=True, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    if proc.returncode != 0:
        sys.exit(f"TensorFlow side failed:\n{proc.stderr[-3000:]}")
    return json.loads((folder / "tf.json").read_text())


def best_pass_rate(forward: torch.nn.Module, backward: bool, shape: tuple[int, int, int]
                   ) -> tuple[float, int]:
    """Images per second of one pass (forward, or forward+backward w.r.t. the input) at the best
    batch size, best of 3 after a warm-up."""
    best = (0.0, 0)
    for batch in (8, 16, 32, 64, 128, 256):
        x = torch.rand(batch, *shape)

        def step(x: torch.Tensor = x) -> None:
            if backward:
                xi = x.clone().requires_grad_(True)
                forward(xi)[:, 0].sum().backward()
            else:
                with torch.inference_mode():
                    forward(x)

        step()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        rate = batch / min(times)
        best = max(best, (rate, batch))
    return best


def naive_rate(method: str, forward: torch.nn.Module, x: torch.Tensor, baseline: torch.Tensor,
               options: dict) -> float:
    """Images per second of Captum called on one image at a time, default batching."""
    from captum import attr

    b, h, w = x.shape[1:]
    mask = torch.arange(b).view(1, b, 1, 1).expand(1, b, h, w).contiguous()
    base = baseline.expand(1, b, h, w).contiguous()
    calls = {
        "saliency": lambda xi: attr.Saliency(forward).attribute(xi, target=0, abs=True),
        "scaled_saliency": lambda xi: attr.Saliency(forward).attribute(xi, target=0, abs=True),
        "input_x_gradient": lambda xi: attr.InputXGradient(forward).attribute(xi, target=0),
        "integrated_gradients": lambda xi: attr.IntegratedGradients(forward).attribute(
            xi, baselines=base, target=0, n_steps=options.get("n_steps", 32)),
        "gradient_shap": lambda xi: attr.GradientShap(forward).attribute(
            xi, baselines=x, target=0, n_samples=options.get("n_samples", 16)),
        "feature_ablation": lambda xi: attr.FeatureAblation(forward).attribute(
            xi, baselines=base, target=0, feature_mask=mask),
        "shapley": lambda xi: attr.ShapleyValueSampling(forward).attribute(
            xi, baselines=base, target=0, feature_mask=mask, n_samples=options.get("n_samples", 25)),
        "lime": lambda xi: attr.Lime(forward).attribute(
            xi, baselines=base, target=0, feature_mask=mask, n_samples=options.get("n_samples", 64)),
        "kernel_shap": lambda xi: attr.KernelShap(forward).attribute(
            xi, baselines=base, target=0, feature_mask=mask,
            n_samples=options.get("n_samples", 128)),
    }
    if method not in calls:
        return float("nan")
    count = min(len(x), 4)
    calls[method](x[:1])  # warm-up
    t0 = time.perf_counter()
    for i in range(count):
        calls[method](x[i : i + 1])
    return count / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small,bn,mobilenetv2,resnet50")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--methods", default="saliency,integrated_gradients,feature_ablation,"
                        "gradient_shap,shapley,permutation,lime,kernel_shap")
    parser.add_argument("--out", default="benchmark.json")
    args = parser.parse_args()

    from xband import explain, image_set, load_model
    from xband.files import write_text
    from xband.methods import get_method
    from xband.run.forward import forward_module, tune

    models = args.models.split(",")
    methods = args.methods.split(",")
    n_steps = get_method("integrated_gradients").n_steps
    folder = Path(tempfile.mkdtemp(prefix="xband-bench-"))
    tf_rates = tensorflow_side(folder, models, args.images, n_steps)
    rows = []
    for name in models:
        height, width, bands, classes = SHAPES[name]
        x = np.random.default_rng(0).uniform(0, 1, (args.images, height, width, bands)
                                             ).astype(np.float32)
        y = np.arange(args.images) % classes
        model = load_model(folder / f"{name}.keras", probe=x[:8], verbose=False,
                           cache_dir=folder / "cache")
        data = image_set(x, y)
        plain = forward_module(model.network("logits"), model.layout, "cpu")
        x_cf = torch.from_numpy(np.moveaxis(x, 3, 1).copy())
        fast, speed_ups, _ = tune(plain, x_cf[:2])
        rates = {kind: best_pass_rate(fast, kind, (bands, height, width)) for kind in (False, True)}
        baseline = x_cf.mean(dim=(0, 2, 3), keepdim=True)
        for method in methods:
            m = get_method(method)
            explain(model, data, methods=[method], progress=False, n_boot=10, all_images=True,
                    examples_per_class=0, max_images=classes)  # warm-up
            runs, walls = [], []
            for repeat in range(2):  # each run measures its pass sizes afresh (empty cache)
                os.environ["XBAND_CACHE_DIR"] = str(folder / f"tuning-{name}-{method}-{repeat}")
                started = time.perf_counter()
                runs.append(explain(model, data, methods=[method], progress=False, n_boot=10,
                                    all_images=True, examples_per_class=0))
                walls.append(time.perf_counter() - started)
            seconds = min(run.summary["methods"][method]["seconds"] for run in runs)
            passes = runs[0].summary["methods"][method]["passes_per_image"]
            rate, batch = rates[method in GRADIENT_METHODS]
            floor = args.images * passes / rate
            rows.append({
                "model": name, "method": method, "passes_per_image": passes,
                "xband_img_s": args.images / seconds, "end_to_end_s": min(walls),
                "tuning_s": min(r.summary["settings"]["tuning_s"] for r in runs),
                "floor_img_s": args.images / floor,
                "efficiency": floor / seconds, "best_batch": batch,
                "naive_img_s": naive_rate(method, plain, x_cf, baseline, m.options()),
                "tf_img_s": tf_rates[name].get(method), "speed_ups": speed_ups,
            })
            print(json.dumps(rows[-1]), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "images": args.images, "peak_rss_mb": peak, "rows": rows}
    write_text(args.out, json.dumps(report, indent=2))
    print(markdown(report))


def markdown(report: dict) -> str:
    """The results as a markdown table."""
    lines = [f"{report['date']}, {report['machine']}, torch {report['torch']}, "
             f"{report['images']} images of 64×64×13, peak RSS {report['peak_rss_mb']:.0f} MB", "",
             "| model | method | passes/img | xband img/s | end to end s (tuning s) | floor img/s "
             "| efficiency | vs naive | vs TF |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        naive = r["xband_img_s"] / r["naive_img_s"] if r["naive_img_s"] == r["naive_img_s"] else None
        tf = r["xband_img_s"] / r["tf_img_s"] if r["tf_img_s"] else None
        lines.append(
            f"| {r['model']} | {r['method']} | {r['passes_per_image']} | {r['xband_img_s']:.1f} | "
            f"{r['end_to_end_s']:.1f} ({r['tuning_s']:.1f}) | "
            f"{r['floor_img_s']:.1f} | {r['efficiency']:.2f} | "
            f"{'–' if naive is None else f'{naive:.1f}×'} | {'–' if tf is None else f'{tf:.2f}×'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
