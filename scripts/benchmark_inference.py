"""What runs xband's forward-only passes: plain eager torch, a frozen TorchScript copy (what xband
used until torch.jit was deprecated), or ONNX Runtime on the model's ONNX graph.

    python scripts/benchmark_inference.py [--models small,bn,mobilenetv2,resnet50] [--images 64]
                                          [--rounds 3] [--out docs/benchmark/inference.json]

Builds Keras models (weights=None) in a TensorFlow subprocess, converts them with xband, and
times band ablation (B + 1 forward-only passes per image) with each engine at the pass size
xband measures for the model, the engines taking turns in every round so that a busy machine
slows them alike; prints the median and best of the rounds and the largest difference of the
band scores from eager. xband runs eager: README, Speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

BUILD = """
import sys
import keras
folder, names = sys.argv[1], sys.argv[2].split(",")
keras.utils.set_random_seed(0)
L = keras.layers
def build(name):
    if name == "small":
        return keras.Sequential([keras.Input((64, 64, 13)), L.Conv2D(32, 3, padding="same",
            activation="relu"), L.MaxPooling2D(), L.Conv2D(64, 3, padding="same",
            activation="relu"), L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax")])
    if name == "bn":
        return keras.Sequential([keras.Input((24, 24, 10)), L.Conv2D(32, 3, padding="same"),
            L.BatchNormalization(), L.ReLU(), L.Conv2D(32, 3, padding="same", activation="relu"),
            L.MaxPooling2D(), L.Conv2D(64, 3, padding="same", activation="relu"),
            L.GlobalAveragePooling2D(), L.Dense(4, activation="softmax")])
    app = {"mobilenetv2": keras.applications.MobileNetV2,
           "resnet50": keras.applications.ResNet50}[name]
    return app(weights=None, input_shape=(64, 64, 13), classes=10)
for name in names:
    build(name).save(f"{folder}/{name}.keras")
"""


def torchscript_copy(forward: nn.Module, example: torch.Tensor) -> nn.Module:
    """The frozen, optimised TorchScript copy xband used before (torch.jit is deprecated)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(forward, example[:1], check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))


class OnnxRuntimeForward(nn.Module):
    """The model's logits graph in ONNX Runtime, channels-first images in: one intra-op thread
    per torch thread, no spinning between runs."""

    def __init__(self, graph: bytes, channels_last: bool):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.name, self.channels_last = self.session.get_inputs()[0].name, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1) if self.channels_last else x
        return torch.from_numpy(self.session.run(None, {self.name: x.contiguous().numpy()})[0])


def logits_graph(path: Path) -> bytes:
    """The ONNX graph xband converted, without its final softmax, for any batch size."""
    from converters.onnx_graph import make_batch_dynamic, strip_final_activation
    from converters.onnx_to_torch import read_onnx

    dynamic = make_batch_dynamic(read_onnx(path))
    return (strip_final_activation(dynamic) or (dynamic,))[0].SerializeToString()


def engines(model, example: torch.Tensor) -> dict[str, nn.Module]:
    from xband.run.forward import forward_module, tune

    eager = tune(forward_module(model.network("logits"), model.layout, "cpu"), example)[0]
    ort = OnnxRuntimeForward(logits_graph(Path(model.onnx_path)),
                             model.layout == "channels_last")
    return {"eager": eager, "torchscript": torchscript_copy(eager, example), "onnxruntime": ort}


def ablation(data, forward: nn.Module, passes) -> tuple[float, np.ndarray]:
    """Seconds and band scores of band ablation on `data` (N, B, H, W) with `forward`."""
    from xband.methods import Context, FeatureAblation
    from xband.run.runner import BatchRunner

    baseline = data.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    ctx = Context(forward=forward, baseline=baseline, band_std=torch.ones(data.shape[1]),
                  donors=None, passes=passes)
    runner = BatchRunner(ctx, lambda positions: data[positions], seed=0, batch_size=64,
                         n_classes=1)
    run = runner.run(FeatureAblation(), known=np.zeros(len(data), dtype=np.int64),
                     targets=np.zeros(len(data), dtype=np.int64), keep_maps=np.empty(0, int))
    return run.seconds, run.scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small,bn,mobilenetv2,resnet50")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="docs/benchmark/inference.json")
    args = parser.parse_args()
    import xband
    from xband.files import write_text
    from xband.run.forward import best_pass_sizes

    names = args.models.split(",")
    folder = Path(tempfile.mkdtemp(prefix="xband-inference-"))
    subprocess.run([sys.executable, "-c", textwrap.dedent(BUILD), str(folder), ",".join(names)],
                   check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    rows = []
    for name in names:
        model = xband.load_model(folder / f"{name}.keras", verbose=False,
                                 cache_dir=folder / "cache")
        h, w = model.spatial_size
        x = np.random.default_rng(0).uniform(0, 1, (args.images, model.n_bands, h, w))
        data = torch.from_numpy(x.astype(np.float32)).contiguous(memory_format=torch.channels_last)
        candidates = engines(model, data[:2])
        passes = best_pass_sizes(candidates["eager"], data[:2])
        times: dict[str, list[float]] = {e: [] for e in candidates}
        scores = {engine: ablation(data, module, passes)[1]  # and a warm-up
                  for engine, module in candidates.items()}
        for _ in range(args.rounds):
            for engine, module in candidates.items():
                times[engine].append(ablation(data, module, passes)[0])
        for engine, seconds in times.items():
            rows.append({"model": name, "engine": engine,
                         "median_img_s": args.images / float(np.median(seconds)),
                         "best_img_s": args.images / min(seconds),
                         "max_abs_diff_vs_eager": float(np.abs(scores[engine]
                                                               - scores["eager"]).max())})
            print(json.dumps(rows[-1]), flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "images": args.images,
              "rounds": args.rounds, "rows": rows}
    write_text(args.out, json.dumps(report, indent=2))
    print("| model | engine | band ablation img/s, median (best) | max |Δ score| vs eager |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['engine']} | {r['median_img_s']:.0f} ({r['best_img_s']:.0f}) | "
              f"{r['max_abs_diff_vs_eager']:.1e} |")


if __name__ == "__main__":
    main()
