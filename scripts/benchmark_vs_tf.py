"""xband against TensorFlow on the same work: the original Keras model explained by a few lines
of TensorFlow, and the same model explained by `xband.explain`, side by side.

    python scripts/benchmark_vs_tf.py --model model.keras --data data.npz [--images 1024]
        [--methods saliency,integrated_gradients,gradient_shap,feature_ablation,shapley]
        [--rounds 3] [--out results.json]
    python scripts/benchmark_vs_tf.py --zoo demo,planted,eurosat,mobilenetv2,resnet50 \
        [--rounds 3] [--out docs/benchmark/vs-tensorflow.json]

--data: an .npz with `x`, the images as the Keras model takes them (N, H, W, B), and `y`, the
labels (N,): the class explained for each image. --zoo builds the models of
docs/benchmark/vs-tensorflow.md and their data instead.

The same work on both sides: every image, its label's logit (a final softmax is stripped on both
sides), the band mean over the images as the baseline; saliency |∂f/∂x|; Integrated Gradients
with the same 32 Gauss–Legendre steps; GradientSHAP with 16 draws of (data image, point on the
path) per image; band ablation (B + 1 forward passes per image); sampled Shapley values with 8
band orders per image (8·B + 1 forward passes). TensorFlow runs in its own process (TensorFlow
and torch never share one): `tf_keras_vis.saliency.Saliency(keepdims=True)` when tf-keras-vis
is installed (else a GradientTape), and `tf.function`s over `GradientTape` and the Keras model
for the rest, the masked copies of a batch of images built in the graph and sent in one call.
xband: `xband.explain(model, data, methods=[method], baseline="mean", all_images=True)` end to
end (the model loaded before, as TensorFlow's is), and the method's own time from its summary.

Both sides first run every method once on a few images (TensorFlow traces its functions, torch
sets up its kernels); then, in each round, every method runs on both sides in turn, the side
that goes first alternating, so that a busy machine slows both alike. Ratios are TensorFlow's
seconds over xband's, per round; the table gives their median and the median times. Also
printed: how far xband's scores are from TensorFlow's (deterministic methods: the largest
difference relative to the largest score; sampled ones: the correlation of the mean scores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

METHODS = ("saliency", "integrated_gradients", "gradient_shap", "feature_ablation", "shapley")
IG_STEPS, SHAP_SAMPLES, SHAPLEY_ORDERS = 32, 16, 8
DETERMINISTIC = ("saliency", "integrated_gradients", "feature_ablation")
WARM_UP_IMAGES = 16

TF_WORKER = r'''
import json, os, sys, time
import numpy as np
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import tensorflow as tf

model_path, data_path, out_dir = sys.argv[1:4]
options = json.loads(sys.argv[4])
reply = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # whatever TensorFlow prints goes to stderr; replies alone to stdout


def logits_model(model):
    """The model without its final softmax: the Dense layer's activation made linear (what
    tf-keras-vis's ReplaceToLinear does), or the layer before a final Softmax/Activation."""
    last = model.layers[-1]
    if getattr(getattr(last, "activation", None), "__name__", "") == "softmax" and not isinstance(
            last, keras.layers.Activation):
        last.activation = keras.activations.linear
        return model
    if isinstance(last, (keras.layers.Softmax, keras.layers.Activation)):
        return keras.Model(model.inputs, model.layers[-2].output)
    return model


started = time.perf_counter()
model = logits_model(keras.models.load_model(model_path, compile=False))
data = np.load(data_path)
X, Y = data["x"].astype(np.float32), data["y"].astype(np.int32)
N, H, W, B = X.shape
BASE = X.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32).reshape(1, 1, 1, B)
ALL = tf.constant(X)
BATCH, FWD_CHUNK, GRAD_CHUNK = options["batch"], options["forward_chunk"], options["gradient_chunk"]
IMAGES = tf.TensorSpec((None, H, W, B), tf.float32)
TARGETS = tf.TensorSpec((None,), tf.int32)
load_s = time.perf_counter() - started


def target_gradient(points, targets):
    with tf.GradientTape() as tape:
        tape.watch(points)
        chosen = tf.gather(model(points, training=False), targets, batch_dims=1)
    return tape.gradient(chosen, points)


gradient = tf.function(target_gradient, input_signature=[IMAGES, TARGETS])


def step_chunks(alphas, weights, n_images):
    """(alphas, weights) of the steps that go through the network together, about
    GRAD_CHUNK points a call."""
    per_call = max(1, GRAD_CHUNK // n_images)
    return [(alphas[i:i + per_call], weights[i:i + per_call]) for i in range(0, len(alphas), per_call)]


NODES, NODE_WEIGHTS = np.polynomial.legendre.leggauss(options["ig_steps"])
ALPHAS, STEP_WEIGHTS = (0.5 * (NODES + 1)).astype(np.float32), (0.5 * NODE_WEIGHTS).astype(np.float32)


@tf.function(input_signature=[IMAGES, TARGETS], reduce_retracing=True)
def ig_batch(x, t):
    n = tf.shape(x)[0]
    total = tf.zeros_like(x)
    for alphas, weights in step_chunks(ALPHAS, STEP_WEIGHTS, BATCH):
        k = len(alphas)
        points = BASE + tf.reshape(alphas, (k, 1, 1, 1, 1)) * (x - BASE)[None]
        grads = target_gradient(tf.reshape(points, (-1, H, W, B)), tf.tile(t, [k]))
        total += tf.tensordot(weights, tf.reshape(grads, (k, n, H, W, B)), 1)
    return tf.reduce_sum(total * (x - BASE), axis=(1, 2))


@tf.function(reduce_retracing=True)
def gshap_batch(x, t, donors, alphas):
    """donors, alphas: (S, n) data image and point on the path of each draw."""
    n, draws = tf.shape(x)[0], SHAP_SAMPLES
    total = tf.zeros_like(x)
    per_call = max(1, GRAD_CHUNK // BATCH)
    for first in range(0, draws, per_call):
        k = min(per_call, draws - first)
        base = tf.gather(ALL, donors[first:first + k])  # (k, n, H, W, B)
        gap = x[None] - base
        points = base + alphas[first:first + k, :, None, None, None] * gap
        grads = target_gradient(tf.reshape(points, (-1, H, W, B)), tf.tile(t, [k]))
        total += tf.reduce_sum(tf.reshape(grads, (k, n, H, W, B)) * gap, axis=0)
    return tf.reduce_sum(total, axis=(1, 2)) / draws


@tf.function(reduce_retracing=True)
def masked_values(x, t, keep):
    """(n, K) target logits of every image with only the bands in keep[n, k] ((n, K, B) bools)
    kept, the others at the band mean: the masked copies built in the graph, one call."""
    n, k = tf.shape(keep)[0], tf.shape(keep)[1]
    copies = tf.where(keep[:, :, None, None, :], x[:, None], BASE[None])
    out = model(tf.reshape(copies, (-1, H, W, B)), training=False)
    return tf.gather(tf.reshape(out, (n, k, -1)), t, axis=2, batch_dims=1)


def saliency(x, t):
    if VIS is None:
        return np.abs(gradient(x, t).numpy()).mean(axis=(1, 2))
    maps = VIS(CategoricalScore(list(t)), x, keepdims=True, normalize_map=False)
    return np.abs(maps).mean(axis=(1, 2))


def ablation(x, t):
    keep = np.concatenate([np.ones((1, B), bool), ~np.eye(B, dtype=bool)])
    values = masked_values(x, t, np.broadcast_to(keep, (len(x), B + 1, B))).numpy()
    return values[:, :1] - values[:, 1:]


def shapley(x, t, rng):
    """Sampled Shapley values: along each of S random band orders per image, bands join one at a
    time from none; a band's value is the mean of its gains (1 + S·B copies per image)."""
    orders = np.argsort(rng.random((len(x), SHAPLEY_ORDERS, B)), axis=2)
    rank = np.argsort(orders, axis=2)  # (n, S, B): when each band joins
    steps = np.arange(1, B + 1)
    keep = rank[:, :, None, :] < steps[None, None, :, None]  # (n, S, step, B)
    keep = np.concatenate([np.zeros((len(x), 1, B), bool), keep.reshape(len(x), -1, B)], axis=1)
    per_call = max(1, FWD_CHUNK // keep.shape[1])
    values = np.concatenate([masked_values(x[i:i + per_call], t[i:i + per_call],
                                           keep[i:i + per_call]).numpy()
                             for i in range(0, len(x), per_call)])
    after = values[:, 1:].reshape(len(x), SHAPLEY_ORDERS, B)  # v after step s
    before = np.concatenate([np.repeat(values[:, :1, None], SHAPLEY_ORDERS, 1), after[:, :, :-1]], 2)
    gains = np.take_along_axis(after - before, rank, axis=2)  # by band
    return gains.mean(axis=1)


def gradient_shap(x, t, rng):
    donors = rng.integers(N, size=(SHAP_SAMPLES, len(x)))
    alphas = rng.random((SHAP_SAMPLES, len(x))).astype(np.float32)
    return gshap_batch(x, t, donors, alphas).numpy()


SHAP_SAMPLES, SHAPLEY_ORDERS = options["shap_samples"], options["shapley_orders"]
RUN = {"saliency": lambda x, t, rng: saliency(x, t),
       "integrated_gradients": lambda x, t, rng: ig_batch(x, t).numpy(),
       "gradient_shap": gradient_shap, "feature_ablation": lambda x, t, rng: ablation(x, t),
       "shapley": shapley}
VIS = None
if options["tf_keras_vis"]:
    try:
        from tf_keras_vis.saliency import Saliency
        from tf_keras_vis.utils.scores import CategoricalScore
        VIS = Saliency(model, clone=False)
    except ImportError:
        pass
reply.write(json.dumps({"ready": True, "load_s": load_s, "tf": tf.__version__,
                        "keras": keras.__version__, "tf_keras_vis": VIS is not None}) + "\n")
for line in sys.stdin:
    job = json.loads(line)
    rng = np.random.default_rng(job["seed"])
    n = job["images"]
    started = time.perf_counter()
    scores = np.concatenate([RUN[job["method"]](X[i:min(i + BATCH, n)], Y[i:min(i + BATCH, n)], rng)
                             for i in range(0, n, BATCH)])
    seconds = time.perf_counter() - started
    path = os.path.join(out_dir, f"{job['method']}.npy")
    np.save(path, scores.astype(np.float64))
    reply.write(json.dumps({"seconds": seconds, "scores": path}) + "\n")
'''


class TensorFlowSide:
    """The TensorFlow worker process: loads the Keras model and the images once, then runs one
    method on the first n images per request and says how long it took."""

    def __init__(self, model: Path, data: Path, folder: Path, options: dict):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TF_WORKER, str(model), str(data), str(folder),
             json.dumps(options)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(folder / "tensorflow.log", "w"), text=True,  # noqa: SIM115
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        self.info = self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"the TensorFlow worker stopped; see {self.proc.args[4]}/tensorflow.log")
        return json.loads(line)

    def run(self, method: str, images: int, seed: int) -> tuple[float, np.ndarray]:
        self.proc.stdin.write(json.dumps({"method": method, "images": images, "seed": seed}) + "\n")
        self.proc.stdin.flush()
        reply = self._reply()
        return reply["seconds"], np.load(reply["scores"])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def xband_method(name: str):
    """The xband method doing the same work as the TensorFlow side."""
    from xband import methods

    return {"saliency": methods.Saliency(),
            "integrated_gradients": methods.IntegratedGradients(n_steps=IG_STEPS),
            "gradient_shap": methods.GradientShap(n_samples=SHAP_SAMPLES),
            "feature_ablation": methods.FeatureAblation(),
            "shapley": methods.Shapley(n_samples=SHAPLEY_ORDERS, max_exact_bands=1)}[name]


class XbandSide:
    """xband in this process: the model loaded (converted) once, then `explain` per method."""

    def __init__(self, model: Path, x: np.ndarray, y: np.ndarray):
        import xband

        started = time.perf_counter()
        self.model = xband.load_model(model, probe=x[:16], verbose=False)
        self.load_s = time.perf_counter() - started
        self.x, self.y = x, y

    def run(self, method: str, images: int, seed: int) -> tuple[float, float, np.ndarray]:
        """Seconds of the whole explain() call, of the method alone, and the (N, B) scores of
        the first `images` images (the warm-up: `images` of them, at least one per class)."""
        import xband

        chosen = np.arange(images)
        if images == WARM_UP_IMAGES:
            chosen = np.union1d(chosen, np.unique(self.y, return_index=True)[1])
        data = xband.image_set(self.x[chosen], self.y[chosen], layout="channels_last")
        started = time.perf_counter()
        result = xband.explain(self.model, data, methods=[xband_method(method)], baseline="mean",
                               all_images=True, progress=False, seed=seed,
                               accept_low_accuracy=True)
        seconds = time.perf_counter() - started
        order = np.argsort(result.indices)
        return seconds, result.summary["methods"][method]["seconds"], result.scores[method][order]


@dataclass
class Timings:
    """Seconds per round of one method on each side."""

    tf: list[float] = field(default_factory=list)
    explain: list[float] = field(default_factory=list)
    method: list[float] = field(default_factory=list)
    agreement: float = float("nan")

    def row(self) -> dict:
        ratios = [t / e for t, e in zip(self.tf, self.explain, strict=True)]
        method_ratios = [t / m for t, m in zip(self.tf, self.method, strict=True)]
        return {"tf_s": statistics.median(self.tf), "explain_s": statistics.median(self.explain),
                "method_s": statistics.median(self.method), "ratio": statistics.median(ratios),
                "method_ratio": statistics.median(method_ratios), "ratios": ratios,
                "rounds": {"tf": self.tf, "explain": self.explain, "method": self.method},
                "agreement": self.agreement}


def agreement(method: str, ours: np.ndarray, theirs: np.ndarray, y: np.ndarray) -> float:
    """How far xband's scores are from TensorFlow's: deterministic methods, the largest
    difference over the largest score; sampled ones, the correlation of class-mean scores."""
    if method in DETERMINISTIC:
        return float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    means = [np.stack([s[y == c].mean(axis=0) for c in np.unique(y)]).ravel() for s in (ours, theirs)]
    return float(np.corrcoef(*means)[0, 1])


def compare(model: Path, x: np.ndarray, y: np.ndarray, *, methods: list[str], rounds: int,
            images: int, tf_options: dict) -> dict:
    """Every method on both sides: a warm-up, then `rounds` rounds in turns."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.savez(folder / "data.npz", x=x, y=y)
        tf_side = TensorFlowSide(model, folder / "data.npz", folder, tf_options)
        ours = XbandSide(model, x, y)
        for method in methods:  # traces and kernels set up on both sides, untimed
            tf_side.run(method, WARM_UP_IMAGES, seed=0)
            ours.run(method, WARM_UP_IMAGES, seed=0)
        times = {m: Timings() for m in methods}
        for round_no in range(rounds):
            for method in methods:
                t = times[method]
                sides = ["tf", "xband"] if (round_no + methods.index(method)) % 2 == 0 else [
                    "xband", "tf"]
                for side in sides:
                    if side == "tf":
                        seconds, tf_scores = tf_side.run(method, images, seed=round_no)
                        t.tf.append(seconds)
                    else:
                        whole, alone, scores = ours.run(method, images, seed=round_no)
                        t.explain.append(whole)
                        t.method.append(alone)
                t.agreement = agreement(method, scores, tf_scores, y[:images])
                print(f"  round {round_no + 1} {method}: TF {t.tf[-1]:.2f} s, xband explain "
                      f"{t.explain[-1]:.2f} s (method {t.method[-1]:.2f} s)", flush=True)
        tf_side.close()
    return {"images": images, "shape": list(x.shape[1:]), "tf_load_s": tf_side.info["load_s"],
            "xband_load_s": ours.load_s, "tf_keras_vis": tf_side.info["tf_keras_vis"],
            "versions": {"tensorflow": tf_side.info["tf"], "keras": tf_side.info["keras"]},
            "methods": {m: t.row() for m, t in times.items()}}


BUILD = r'''
import sys
import numpy as np
import keras

name, data_path, out = sys.argv[1:4]
keras.utils.set_random_seed(0)
L = keras.layers
if name in ("mobilenetv2", "resnet50"):
    app = {"mobilenetv2": keras.applications.MobileNetV2, "resnet50": keras.applications.ResNet50}
    app[name](weights=None, input_shape=(64, 64, 13), classes=10).save(out)
    sys.exit()
data = np.load(data_path)
x, y = data["x"], data["y"]
if name == "planted":  # tests/conftest.py's planted CNN, on 24x24x10 images and 5 classes
    body = [L.Conv2D(16, 3, padding="same", activation="relu"),
            L.Conv2D(16, 3, padding="same", activation="relu"), L.GlobalMaxPooling2D()]
else:  # a EuroSAT-sized CNN: 64x64x13, 10 classes
    body = [L.Conv2D(32, 3, padding="same"), L.BatchNormalization(), L.ReLU(), L.MaxPooling2D(),
            L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPooling2D(),
            L.Conv2D(128, 3, padding="same", activation="relu"), L.GlobalAveragePooling2D()]
model = keras.Sequential([keras.Input(x.shape[1:]), *body,
                          L.Dense(int(y.max()) + 1, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
history = model.fit(x, y, epochs=int(sys.argv[4]), batch_size=64, verbose=0)
print(f"{name}: training accuracy {history.history['accuracy'][-1]:.2f}", file=sys.stderr)
model.save(out)
'''

# model → (height, width, bands, classes, images explained, training epochs)
ZOO = {"demo": (32, 32, 13, 5, 250, 0), "planted": (24, 24, 10, 5, 1024, 15),
       "eurosat": (64, 64, 13, 10, 40, 8), "mobilenetv2": (64, 64, 13, 10, 20, 0),
       "resnet50": (64, 64, 13, 10, 20, 0)}


def planted_data(n: int, height: int, width: int, bands: int, classes: int, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, B) of noise; class c has a blob in band c·B // C, every image one in a
    random other band (tests/planted.py, at this size)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes)
    x = rng.normal(scale=0.3, size=(n, height, width, bands)).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    planted = [c * bands // classes for c in range(classes)]
    others = [b for b in range(bands) if b not in planted] or list(range(bands))
    for i, c in enumerate(y):
        for band in (planted[c], rng.choice(others)):
            cy, cx = rng.uniform(3, height - 3), rng.uniform(3, width - 3)
            x[i, :, :, band] += 2.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (height / 2))
    return x, y


def zoo_case(name: str, folder: Path) -> tuple[Path, np.ndarray, np.ndarray, int]:
    """A model of the benchmark page, its images and labels, and how many to explain."""
    height, width, bands, classes, images, epochs = ZOO[name]
    if name == "demo":
        from xband import demo

        x, y = demo.demo_data(n_per_class=images // classes, seed=1)
        return demo.MODEL_PATH, x.astype(np.float32), y, images
    x, y = planted_data(images, height, width, bands, classes, seed=1)
    path = folder / f"{name}.keras"
    train = folder / f"{name}-train.npz"
    np.savez(train, **dict(zip("xy", planted_data(1024, height, width, bands, classes, 0),
                                strict=True)))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(BUILD), name, str(train), str(path),
                           str(epochs)], capture_output=True, text=True, check=False,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if proc.returncode:
        sys.exit(f"building {name} failed:\n{proc.stderr[-3000:]}")
    print(proc.stderr.strip().splitlines()[-1] if epochs else f"{name}: weights=None", flush=True)
    return path, x, y, images


def markdown(results: dict) -> str:
    """One table: per model and method, the median seconds and ratios."""
    lines = ["| model | images | method | TensorFlow | xband `explain()` | ratio | xband method "
             "only | ratio | agreement |", "|---|---|---|---|---|---|---|---|---|"]
    for model, result in results["models"].items():
        for method, row in result["methods"].items():
            lines.append(
                f"| {model} {'×'.join(map(str, result['shape']))} | {result['images']} | {method} "
                f"| {row['tf_s']:.2f} s | {row['explain_s']:.2f} s | **{row['ratio']:.2f}×** | "
                f"{row['method_s']:.2f} s | {row['method_ratio']:.2f}× | {row['agreement']:.2g} |")
    return "\n".join(lines)


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__() if Path(
        "/proc/loadavg").exists() else "unknown"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a Keras model file (.keras, .h5)")
    source.add_argument("--zoo", help="models of the benchmark page, comma-separated: "
                                      + ",".join(ZOO))
    parser.add_argument("--data", type=Path, help="with --model: .npz with x (N, H, W, B), y (N,)")
    parser.add_argument("--images", type=int, help="images explained (default: all, or the zoo's)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tf-batch", type=int, default=64, help="images per TensorFlow step")
    parser.add_argument("--tf-forward-chunk", type=int, default=1024,
                        help="most masked copies per TensorFlow call (Shapley)")
    parser.add_argument("--tf-gradient-chunk", type=int, default=512,
                        help="about this many points per TensorFlow gradient call (IG, GradientSHAP)")
    parser.add_argument("--no-tf-keras-vis", action="store_true",
                        help="saliency by a GradientTape even when tf-keras-vis is installed")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if args.model is not None and args.data is None:
        parser.error("--model needs --data")
    return args


def main() -> None:
    args = arguments()
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        sys.exit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    tf_options = {"batch": args.tf_batch, "forward_chunk": args.tf_forward_chunk,
                  "gradient_chunk": args.tf_gradient_chunk, "ig_steps": IG_STEPS,
                  "shap_samples": SHAP_SAMPLES, "shapley_orders": SHAPLEY_ORDERS,
                  "tf_keras_vis": not args.no_tf_keras_vis}
    results = {"command": " ".join(["python", *sys.argv]), "machine": {
        "host": platform.node(), "cpus": os.cpu_count(), "load_before": load_average()},
        "options": tf_options, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        cases = [m.strip() for m in args.zoo.split(",")] if args.zoo else ["model"]
        for case in cases:
            if args.zoo:
                model, x, y, images = zoo_case(case, Path(tmp))
            else:
                data = np.load(args.data)
                model, x, y, images = args.model, data["x"].astype(np.float32), data["y"], len(data["x"])
            images = min(args.images or images, len(x))
            print(f"{case}: {images} images {x.shape[1:]}, load average {load_average()}", flush=True)
            results["models"][case] = compare(model, x, y, methods=methods, rounds=args.rounds,
                                              images=images, tf_options=tf_options)
    results["machine"]["load_after"] = load_average()
    print(markdown(results))
    print(f"load average before {results['machine']['load_before']}, after "
          f"{results['machine']['load_after']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
