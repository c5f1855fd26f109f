"""Hyperspectral, measured: the planted 200-band set explained by spectral region, the time per
method at 200 bands against 13, and why `--regions auto` cuts 100 nm windows.

1. Trains the planted CNN (xband.demo.spectra: 200 bands 400–2500 nm, one absorption dip per
   class) and explains held-out images by every method with `--regions auto`; prints each
   method's top region per class and whether it holds the planted dip; writes the figures to
   --out (importance against wavelength, the region × class heat map); runs every trust check
   and prints the verdict.
   Then the same trained weights with the per-band standardisation given to xband as
   preprocessing (what `--norm-stats` does) instead of inside the network: each method's top
   region, and how much the effect methods' scores moved (they should not).
2. Times every method per image on the same network size at 13 bands (band by band, as a
   Sentinel-2 run), at 200 bands band by band (`regions='none'`, on fewer images: the
   perturbation methods cost hundreds of times more) and at 200 bands by region.
3. For window widths of 25–200 nm: the regions, their cost for band ablation, and the mean
   correlation over the images' pixels between bands of one window and of neighbouring windows;
   and where the correlation between neighbouring bands is lowest (where a split by correlation
   would cut).

    .venv/bin/python scripts/hyperspectral.py [--out docs/hyperspectral] [--images 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import xband  # noqa: E402
from xband.data.regions import band_regions, parse_regions  # noqa: E402
from xband.demo.spectra import (  # noqa: E402
    ABSORPTION_NM,
    CLASS_NAMES,
    spectral_images,
    train_spectral,
)
from xband.report import plots  # noqa: E402
from xband.run.cost import pass_kind  # noqa: E402
from xband.run.tuning import KINDS  # noqa: E402

SHOWN = ("integrated_gradients", "gradient_shap", "feature_ablation", "shapley")


def explain(net, x, y, wavelength, regions: str, **settings) -> xband.Explanation:
    return xband.explain(xband.load_model(net), (x, y), classes=CLASS_NAMES,
                         wavelengths=wavelength, regions=regions, all_images=True, n_boot=200,
                         examples_per_class=0, progress=False, seed=0, **settings)


def top_regions(result: xband.Explanation, wavelength: np.ndarray) -> pd.DataFrame:
    """Method × class: the top region, and ✓ where it holds the band nearest the planted dip."""
    rows = result.importance_of()
    rows = rows[(rows["grouping"] == "true_class") & (rows["rank"] == 1)]
    table = {}
    for method in result.methods:
        mine = rows[rows["method"] == method]
        top = dict(zip(mine["class"], mine["band"], strict=True))
        cells = {}
        for c, nm in ABSORPTION_NM.items():
            planted = f"B{int(np.argmin(np.abs(wavelength - nm))) + 1}"
            hit = planted in result.members()[top[CLASS_NAMES[c]]]
            cells[f"{CLASS_NAMES[c]} ({nm:g} nm)"] = f"{top[CLASS_NAMES[c]]} {'✓' if hit else '✗'}"
        table[method] = cells
    return pd.DataFrame(table).T


def standardised_by_xband(net, x, y, wavelength) -> xband.Explanation:
    """`net` without its first layer, the per-band standardisation, which xband applies to the
    images instead (as `--norm-stats` does): gradients are then taken per standardised unit."""
    standardise = net[0]
    stats = xband.Preprocess(mean=standardise.mean.flatten().numpy(),
                             std=standardise.std.flatten().numpy())
    data = xband.image_set(x, y, classes=CLASS_NAMES, wavelengths=wavelength, preprocess=stats)
    return xband.explain(xband.load_model(net[1:]), data, regions="auto", all_images=True,
                         n_boot=200, examples_per_class=0, progress=False, seed=0)


def largest_change(inside: xband.Explanation, outside: xband.Explanation) -> pd.Series:
    """Per method, the largest change of a per-image region score between the two placements of
    the standardisation, relative to the largest score."""
    return pd.Series({m: float(np.abs(outside.scores[m] - inside.scores[m]).max()
                               / np.abs(inside.scores[m]).max()) for m in inside.methods})


def verdict_lines(net, x, y, wavelength, result: xband.Explanation) -> list[str]:
    """Every trust check on the region run, then the verdict: its sentences and the methods
    it leaves out, with why."""
    data = xband.image_set(x, y, classes=CLASS_NAMES, wavelengths=wavelength)
    result.evaluation = xband.evaluate(xband.load_model(net), data, result)
    verdict = result.verdict()
    lines = [c.sentence for c in verdict.classes]
    lines += [f"left out: {method} ({check}: {why})" for method, check, why in verdict.failures]
    return lines


def write_figures(result: xband.Explanation, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    info = result.method_info
    for method in SHOWN:
        per_band = method in result.feature_scores.get("bands", {})
        fig = plots.region_spectrum(result.importance_of("bands" if per_band else None),
                                    method, result.regions, per_band=per_band, method_info=info)
        plots.save_figure(fig, out / f"spectrum_{method}.png")
    plots.save_figure(plots.band_class_heatmap(result.importance_of(), "shapley", method_info=info,
                                               feature="spectral region"),
                      out / "heatmap_shapley.png")


def per_image_ms(runs: list[tuple[xband.Explanation, int]]) -> dict[str, float]:
    """Milliseconds per image of every method, the least over repeated runs (a machine shared
    with other work slows some runs; none runs faster than it can)."""
    methods = runs[0][0].methods
    return {m: min(r.record.timings[m] / n for r, n in runs) * 1e3 for m in methods}


def passes(result: xband.Explanation, n_features: int) -> dict[str, int]:
    """Network passes per image of every method (`xband.run.cost`'s count)."""
    k = result.plan.n_background
    return {m.name: m.passes_per_image(n_features, k) for m in result.plan.methods}


def timing_table(net200, x, y, wavelength) -> pd.DataFrame:
    """Passes and milliseconds per image of every method: 13 bands, 200 bands by region, 200
    bands band by band (one image a class). Untuned, so that every run has the same pass sizes;
    runs alternate 13 and 200 bands, so that a busy spell of the machine hits both."""
    x13, y13, wl13 = spectral_images(len(y) // len(CLASS_NAMES), n_bands=13, seed=3)
    net13 = train_spectral(x13, y13, epochs=20)
    thirteen, regions = [], []
    for _ in range(2):
        thirteen.append((explain(net13, x13, y13, wl13, "none", tuned=False), len(y13)))
        regions.append((explain(net200, x, y, wavelength, "auto", tuned=False), len(y)))
    few = np.concatenate([np.flatnonzero(y == c)[:1] for c in range(len(CLASS_NAMES))])
    per_band = [(explain(net200, x[few], y[few], wavelength, "none", tuned=False), len(few))]
    by_region = regions[0][0]
    n_regions = len(by_region.regions)
    table = pd.DataFrame({
        "passes, 13 bands": passes(by_region, 13),
        f"passes, 200 bands by region ({n_regions})": passes(by_region, n_regions),
        "passes, 200 bands band by band": passes(by_region, 200),
        "ms, 13 bands": per_image_ms(thirteen),
        "ms, 200 bands by region": per_image_ms(regions),
        "ms, 200 bands band by band": per_image_ms(per_band),
    })
    table["by region / 13 bands"] = table["ms, 200 bands by region"] / table["ms, 13 bands"]
    table["band by band / 13 bands"] = (table["ms, 200 bands band by band"]
                                        / table["ms, 13 bands"])
    before, after = pass_ms(thirteen), pass_ms(regions)
    price = {kind: after[kind] / before[kind] for kind in KINDS}
    print("one pass, ms per image, 13 → 200 bands: " + "; ".join(
        f"{kind} {before[kind]:.3f} → {after[kind]:.3f} ({price[kind]:.1f}×)" for kind in KINDS))
    kinds = {m.name: pass_kind(m) for m in by_region.plan.methods}
    table["by region / 13 bands, per pass price"] = [
        table.loc[m, "by region / 13 bands"] / price[kinds[m]] for m in table.index]
    table["passes, by region / 13 bands"] = (table[f"passes, 200 bands by region ({n_regions})"]
                                            / table["passes, 13 bands"])
    return table.round(2)


def pass_ms(runs: list[tuple[xband.Explanation, int]]) -> dict[str, float]:
    """Milliseconds per image of one forward and one gradient pass of the run's network, as
    the run timed them before its methods (the least over the runs)."""
    return {kind: min(r.summary["settings"]["pass_timing"]["seconds_per_image_pass"][kind]
                      for r, _ in runs) * 1e3 for kind in KINDS}


def window_table(x: np.ndarray, wavelength: np.ndarray) -> pd.DataFrame:
    """Per window width: regions, band ablation passes per image (K = 8), the mean correlation
    of bands within a window and of bands in neighbouring windows."""
    pixels = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    corr = np.corrcoef(pixels, rowvar=False)
    names = [f"B{i + 1}" for i in range(len(wavelength))]
    rows = []
    for width in (25, 50, 100, 200):
        regions = list(band_regions(parse_regions(f"{width}nm"), wavelength, names).values())
        within = np.mean([corr[np.ix_(r, r)][np.triu_indices(len(r), 1)].mean()
                          for r in regions if len(r) > 1])
        between = np.mean([corr[np.ix_(a, b)].mean() for a, b in zip(regions[:-1], regions[1:],
                                                                       strict=True)])
        rows.append({"width nm": width, "regions": len(regions),
                     "band ablation passes": len(regions) * 8 + 1,
                     "ρ within a window": round(float(within), 3),
                     "ρ neighbouring windows": round(float(between), 3)})
    return pd.DataFrame(rows)


def weakest_links(x: np.ndarray, wavelength: np.ndarray, n: int = 6) -> str:
    """Where a split by band-to-band correlation would cut: the `n` neighbouring band pairs with
    the lowest correlation over the images' pixels, and the median over all pairs."""
    pixels = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    corr = np.corrcoef(pixels, rowvar=False)
    adjacent = np.diagonal(corr, offset=1)
    pairs = [f"{wavelength[i]:.0f}/{wavelength[i + 1]:.0f} nm ρ {adjacent[i]:.3f}"
             for i in np.argsort(adjacent)[:n]]
    return f"lowest: {'; '.join(pairs)}; median {np.median(adjacent):.3f}"


def markdown(table: pd.DataFrame, index: bool = True) -> str:
    """A pipe table of `table` (its index as the first column when `index`)."""
    frame = table.reset_index() if index else table
    head = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/hyperspectral")
    parser.add_argument("--images", type=int, default=8, help="held-out images per class")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    x, y, wavelength = spectral_images(24, seed=0)
    net = train_spectral(x, y)
    test_x, test_y, _ = spectral_images(args.images, seed=1)
    with torch.no_grad():
        accuracy = (net(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean()
    print(f"planted 200-band set: held-out accuracy {accuracy:.2f} on {len(test_y)} images")
    result = explain(net, test_x, test_y, wavelength, "auto")
    print("\nTop region per class (✓: holds the planted dip)\n")
    print(markdown(top_regions(result, wavelength)))
    write_figures(result, Path(args.out))
    outside = standardised_by_xband(net, test_x, test_y, wavelength)
    print("\nThe same weights, the standardisation given to xband as preprocessing\n")
    print(markdown(top_regions(outside, wavelength)))
    print("\nLargest change of a region score, relative to the largest score:")
    print(largest_change(result, outside).map("{:.1e}".format).to_string())
    print("\nEvery trust check, then the verdict\n")
    print("\n".join(verdict_lines(net, test_x, test_y, wavelength, result)))
    print("\nPasses and milliseconds per image (2 CPU threads)\n")
    print(markdown(timing_table(net, test_x, test_y, wavelength)))
    print("\nWindow widths on the planted images\n")
    print(markdown(window_table(test_x, wavelength), index=False))
    print("\nNeighbouring bands' correlation: " + weakest_links(test_x, wavelength))
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
