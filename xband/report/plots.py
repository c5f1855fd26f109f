"""Figures of per-band, per-class importance.

Every function returns a `matplotlib.figure.Figure` built without pyplot (no global state, no
window, any backend); `save_figure` writes it as PNG. `importance` is the engine's tidy table
(method, grouping, class, target, band, band_index, wavelength_nm, score, share, intervals, n,
rank) and `method_info` maps a method to {"label", "kind", "signed", "units"}; without it, titles
fall back to the method's name.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from xband.files import write_bytes

_SELF_TARGETS = ("true class", "predicted class")
DPI = 130
FIGURES_PER_WORKER = 6  # figures a drawing worker must have to repay its start
Drawing = tuple[str, str, Callable[[], Figure]]  # (file stem, caption, what draws the figure)
Key = TypeVar("Key", bound=Hashable)

_GROUPING_TEXT = {
    "true_class": "mean over the images of each true class",
    "predicted_class": "mean over the images predicted as each class",
    "correct": "mean over the correctly classified images of each class",
    "misclassified": "mean over the misclassified images of each class",
}
_SCORE_TEXT = {
    "gradient": "sensitivity: mean |∂f/∂x| over the band's pixels",
    "attribution": "contribution: attribution summed over the band's pixels",
    "perturbation": "effect of replacing the band by its baseline",
    "dataset": "accuracy drop when the band is shuffled across images",
}
_SHARE_TEXT = "share of |score|: s_b / Σ|s| per image, in %"
_VALUE_COLUMNS = {"share": ("share", "share_ci_low", "share_ci_high"),
                  "score": ("score", "ci_low", "ci_high")}
_RANK_SHADES = 6
_MAX_WIDTH = 12.5  # inches: about the report's width at DPI
_BAR = "#9fb3c8"
_TOP = "#d95f02"


def _info(method: str, method_info: Mapping[str, Mapping] | None) -> dict:
    """The method's label, kind, signedness and units, with defaults for unknown methods."""
    info = dict((method_info or {}).get(method, {}))
    info.setdefault("label", method.replace("_", " "))
    return info


def _value_text(info: dict, value: str) -> str:
    """What a plotted value means, for titles and colour-bar labels."""
    if value == "share":
        return _SHARE_TEXT
    if value == "rank":
        return "band rank by mean share (1 = most important)"
    return info.get("units") or _SCORE_TEXT.get(info.get("kind"), "per-band score")


def _rows(importance: pd.DataFrame, method: str, grouping: str, *,
          self_target: bool) -> pd.DataFrame:
    """Rows of one method and grouping: per-class targets (true/predicted) or class × target ones.

    When only class × target rows exist, the per-class view uses the diagonal (target = class).
    """
    rows = importance[(importance["method"] == method) & (importance["grouping"] == grouping)]
    is_self = rows["target"].isin(_SELF_TARGETS)
    if self_target:
        rows = rows[is_self] if is_self.any() else rows[rows["target"] == rows["class"]]
    else:
        rows = rows[~is_self]
    if rows.empty:
        kind = "per-class" if self_target else "class × target"
        raise ValueError(f"no {kind} rows for method {method!r} and grouping {grouping!r}")
    return rows


def _bands(rows: pd.DataFrame) -> list[str]:
    """Band names in wavelength order when every band's is known, else in image order."""
    bands = rows.drop_duplicates("band")
    known = "wavelength_nm" in bands and bands["wavelength_nm"].notna().all()
    return list(bands.sort_values(["wavelength_nm", "band_index"] if known else "band_index",
                                  kind="stable")["band"])


def _pivot(rows: pd.DataFrame, value: str, index: str, columns: str,
           column_order: Sequence[str] | None = None) -> pd.DataFrame:
    """index × columns table of `value`, rows in order of appearance."""
    table = rows.pivot(index=index, columns=columns, values=value)
    if column_order is None:
        column_order = pd.unique(rows[columns])
    return table.reindex(index=pd.unique(rows[index]), columns=column_order)


def _is_signed(info: dict, values: np.ndarray) -> bool:
    """Signed when the method says so or when any value is negative."""
    finite = values[np.isfinite(values)]
    return bool(info.get("signed")) or bool(finite.size and finite.min() < 0)


def _display(values: np.ndarray, value: str) -> tuple[float, str, str]:
    """Display factor, annotation format and unit suffix: shares in %, scores scaled by 10^-k."""
    if value == "share":
        return 100.0, "{:.0f}", " (%)"
    exponent = math.floor(math.log10(_absmax(values)))
    scale = 0 if -1 <= exponent <= 2 else exponent
    decimals = {-1: 2, 0: 2, 1: 1}.get(exponent - scale, 0)
    suffix = f" ($\\times 10^{{{scale}}}$)" if scale else ""
    return 10.0**-scale, f"{{:.{decimals}f}}", suffix


def _absmax(values: np.ndarray) -> float:
    """Largest finite |value|, or 1 when there is none (a usable colour-scale limit)."""
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _heatmap(ax: Axes, values: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], *,
             signed: bool, fmt: str | None, vmin: float | None = None, vmax: float | None = None,
             cmap: str | None = None) -> AxesImage:
    """Matrix as coloured cells: diverging around 0 when signed, sequential otherwise.

    `fmt` annotates each cell (None: no annotation); NaN cells are grey and marked n/a.
    """
    finite = values[np.isfinite(values)]
    vmax = _absmax(values) if vmax is None else vmax
    if vmin is None:
        vmin = -vmax if signed else min(0.0, float(finite.min()) if finite.size else 0.0)
    colours = colormaps[cmap or ("RdBu_r" if signed else "YlOrRd")].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", vmin=vmin, vmax=vmax,
                      cmap=colours, interpolation="nearest")
    ax.set_xticks(range(len(col_labels)), labels=[str(c) for c in col_labels])
    ax.set_yticks(range(len(row_labels)), labels=[str(r) for r in row_labels])
    ax.tick_params(length=0)
    if fmt is not None:
        size = 8 if values.size <= 150 else 6.5
        for (i, j), v in np.ndenumerate(values):
            if not np.isfinite(v):
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=size, color="#555555")
                continue
            r, g, b, _ = image.cmap(image.norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            text = fmt.format(v)
            ax.text(j, i, text.lstrip("-") if float(text) == 0 else text, ha="center",
                    va="center", fontsize=size, color="white" if dark else "black")
    return image


def _wrap(text: str, width_in: float) -> str:
    """Wrap each line of a title to about the width of the figure (10 pt text)."""
    width = max(40, int(width_in * 11))
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def _rotate_if_crowded(ax: Axes, labels: Sequence[str], width_in: float) -> None:
    """Turn x tick labels vertical when they would overlap horizontally."""
    chars = sum(len(str(label)) for label in labels) + 2 * len(labels)
    if chars * 0.075 > width_in:
        ax.tick_params(axis="x", labelrotation=90)


def _outline_row_max(ax: Axes, values: np.ndarray, *, lowest: bool = False) -> None:
    """Draw a box around each row's largest finite value (the top band; with `lowest`, around
    the smallest: the top rank), around each of several that tie, and around none where every
    band ties (no band is first)."""
    for i, row in enumerate(values):
        finite = row[np.isfinite(row)]
        if not finite.size or (finite.size > 1 and np.all(finite == finite[0])):
            continue
        best = finite.min() if lowest else finite.max()
        for j in np.flatnonzero(row == best):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.2, ec="black"))


def band_class_heatmap(importance: pd.DataFrame, method: str, *, grouping: str = "true_class",
                       value: str = "share", method_info: Mapping[str, Mapping] | None = None,
                       feature: str = "band") -> Figure:
    """Class × band heat map of one method's mean share, score or rank (for a consensus: the
    mean rank over methods); boxes mark top bands. feature: what the columns are ("band",
    "spectral region")."""
    info = _info(method, method_info)
    rows = _rows(importance, method, grouping, self_target=True)
    bands = _bands(rows)
    table = _pivot(rows, "rank" if value == "rank" else _VALUE_COLUMNS[value][0], "class", "band",
                   bands)
    values = table.to_numpy(dtype=float)
    if value == "rank":  # 1 is the darkest colour
        factor, fmt, suffix = 1.0, "{:.1f}", ""
        style = {"signed": False, "vmin": 1, "vmax": len(bands), "cmap": "YlOrRd_r"}
    else:
        factor, fmt, suffix = _display(values, value)
        style = {"signed": _is_signed(info, values * factor)}
    shown = values * factor
    labels_in = 0.09 * max(len(str(c)) for c in table.index)
    fig = Figure(figsize=(max(6.5, 0.62 * len(bands) + labels_in + 2.2), 0.42 * len(table) + 2.2),
                 layout="constrained")
    ax = fig.subplots()
    image = _heatmap(ax, shown, table.index, bands, fmt=fmt if shown.size <= 260 else None,
                     **style)
    _outline_row_max(ax, shown, lowest=value == "rank")
    _rotate_if_crowded(ax, bands, 0.62 * len(bands))
    ax.set_xlabel(feature)
    ax.set_ylabel("class")
    fig.colorbar(image, ax=ax, label=f"{value}{suffix}", shrink=0.9)
    ax.set_title(_wrap(f"{info['label']} — {_value_text(info, value)}\n"
                       f"{_GROUPING_TEXT.get(grouping, grouping)}; box = top {feature} of the class",
                       fig.get_figwidth() - labels_in - 0.5),  # it starts where the axes do
                 fontsize=10, loc="left")
    return fig


def _panel_figure(n: int, panel: tuple[float, float], extra: tuple[float, float], *,
                  max_cols: int = 5, **subplot_kw) -> tuple[Figure, list[Axes], int]:
    """A figure of n panels (inches each, plus `extra` for labels) at most _MAX_WIDTH wide.

    Returns the figure, the n axes (unused grid cells hidden) and the number of columns.
    """
    ncols = max(1, min(n, max_cols, int((_MAX_WIDTH - extra[0]) // panel[0])))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel[0] * ncols + extra[0], panel[1] * nrows + extra[1]),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n]), ncols


def class_bars(importance: pd.DataFrame, method: str, *, grouping: str = "true_class",
               value: str = "share", method_info: Mapping[str, Mapping] | None = None,
               feature: str = "band") -> Figure:
    """One bar panel per class: mean per band (`feature`: or spectral region) with its 95%
    interval, top one highlighted."""
    info = _info(method, method_info)
    rows = _rows(importance, method, grouping, self_target=True)
    bands = _bands(rows)
    mean_col, low_col, high_col = _VALUE_COLUMNS[value]
    classes = list(pd.unique(rows["class"]))
    tables = {col: _pivot(rows, col, "class", "band", bands).to_numpy(dtype=float)
              for col in (mean_col, low_col, high_col)}
    factor, _, suffix = _display(tables[mean_col], value)
    means, lows, highs = (tables[col] * factor for col in (mean_col, low_col, high_col))
    counts = rows.groupby("class", sort=False)["n"].max()
    panel_w = max(3.6, 0.36 * len(bands) + 1.0)
    fig, axes, ncols = _panel_figure(len(classes), (panel_w, 2.9), (0.4, 1.0), max_cols=3,
                                     sharey=True)
    x = np.arange(len(bands))
    for ax, cls, mean, low, high in zip(axes, classes, means, lows, highs, strict=True):
        err = np.nan_to_num(np.clip([mean - low, high - mean], 0, None))
        colors = [_BAR] * len(bands)
        if np.isfinite(mean).any():
            colors[int(np.nanargmax(mean))] = _TOP
        ax.bar(x, np.nan_to_num(mean), color=colors, yerr=err, capsize=2,
               error_kw={"elinewidth": 0.9, "ecolor": "#333333"})
        ax.axhline(0, color="black", lw=0.7)
        ax.set_xticks(x, labels=bands)
        _rotate_if_crowded(ax, bands, panel_w - 0.8)
        ax.set_title(f"{cls} (n={counts.get(cls, 0):g})", fontsize=10)
        ax.grid(axis="y", lw=0.4, alpha=0.6)
        ax.set_axisbelow(True)
    for ax in axes[::ncols]:
        ax.set_ylabel(f"{value}{suffix}")
    fig.suptitle(_wrap(f"{info['label']} — {_value_text(info, value)}\n"
                       f"{_GROUPING_TEXT.get(grouping, grouping)}; whiskers = 95% bootstrap "
                       f"interval; orange = top {feature}", fig.get_figwidth()), fontsize=10.5)
    return fig


def methods_panel(importance: pd.DataFrame, *, grouping: str = "true_class", value: str = "rank",
                  method_info: Mapping[str, Mapping] | None = None,
                  feature: str = "band") -> Figure:
    """Per class, a method × band (`feature`: or spectral region) heat map of every method's
    rank (or share) side by side."""
    rows = importance[importance["grouping"] == grouping]
    rows = pd.concat([_rows(rows, m, grouping, self_target=True)
                      for m in pd.unique(rows["method"])])
    bands = _bands(rows)
    methods = list(pd.unique(rows["method"]))
    labels = [_info(m, method_info)["label"] for m in methods]
    classes = list(pd.unique(rows["class"]))
    column = "rank" if value == "rank" else _VALUE_COLUMNS[value][0]
    tables = [_pivot(rows[rows["class"] == c], column, "method", "band", bands)
              .reindex(methods).to_numpy(dtype=float) for c in classes]
    if value == "rank":
        factor, fmt, suffix = 1.0, "{:.0f}", " (1 = top)"
        style = {"signed": False, "vmin": 1, "vmax": min(len(bands), _RANK_SHADES),
                 "cmap": "YlOrRd_r"}
    else:
        factor, fmt, suffix = _display(np.stack(tables), value)
        style = {"signed": _is_signed({}, np.stack(tables))}
        style["vmax"] = _absmax(np.stack(tables) * factor)
    panel_w = 0.42 * len(bands) + 0.075 * max(len(label) for label in labels) + 0.8
    fig, axes, _ = _panel_figure(len(classes), (panel_w, 0.3 * len(methods) + 1.0), (1.2, 1.0),
                                 max_cols=2)
    for ax, cls, table in zip(axes, classes, tables, strict=True):
        image = _heatmap(ax, table * factor, labels, bands, fmt=fmt, **style)
        _rotate_if_crowded(ax, bands, 0.42 * len(bands))
        ax.set_title(str(cls), fontsize=10, loc="left")
    clipped = value == "rank" and len(bands) > _RANK_SHADES
    fig.colorbar(image, ax=axes, label=f"{value}{suffix}", shrink=min(0.6, 4 / fig.get_figheight()),
                 extend="max" if clipped else "neither",
                 ticks=range(1, style["vmax"] + 1) if value == "rank" else None)
    what = (f"rank of each {feature} (1 = most important, by mean share"
            + (f"; ranks ≥ {_RANK_SHADES} share the palest colour)" if clipped else ")")
            if value == "rank" else _value_text({}, value))
    fig.suptitle(_wrap(f"{feature.capitalize()} ranking by every method — {what}\n"
                       f"{_GROUPING_TEXT.get(grouping, grouping)}", fig.get_figwidth()),
                 fontsize=10.5)
    return fig


def band_maps(image: np.ndarray, maps: Mapping[str, np.ndarray], band_names: Sequence[str], *,
              title: str, method_info: Mapping[str, Mapping] | None = None,
              outline: np.ndarray | None = None) -> Figure:
    """One small map per input band: the image's bands in grey, then one row per method;
    `outline` (H, W) bools, the explained class's pixels of a segmentation run, is drawn round
    on every map.

    Within a method row all bands share one colour scale (99.5th percentile of |value|), so bands
    are comparable; each input band is stretched on its own 2–98 percentiles. A row is one image
    of the bands side by side (one axes per row, not per map: a figure of 13 bands × 10 rows
    draws in a fraction of the time).
    """
    n_bands = len(band_names)
    height, width = image.shape[1:]
    cell = max(0.6, min(1.3, (_MAX_WIDTH - 2.6) / n_bands))
    row_h = cell * height / width
    fig = Figure(figsize=(cell * n_bands + 2.6, row_h * (len(maps) + 1) + 1.2),
                 layout="constrained")
    axes = fig.subplots(len(maps) + 1, 1, squeeze=False)[:, 0]
    low, high = np.nanpercentile(image.reshape(n_bands, -1), [2, 98], axis=1)
    stretched = (image - low[:, None, None]) / np.maximum(high - low, 1e-12)[:, None, None]
    rows = [("input band\n(own 2–98% stretch)", np.clip(stretched, 0, 1), "gray", (0.0, 1.0),
             False)]
    for method, attribution in maps.items():
        finite = np.abs(attribution[np.isfinite(attribution)])
        vmax = float(np.percentile(finite, 99.5)) if finite.size else 1.0
        signed = bool(finite.size and np.nanmin(attribution) < 0)
        rows.append((_info(method, method_info)["label"], attribution,
                     "RdBu_r" if signed else "magma", (-vmax if signed else 0.0, vmax or 1.0),
                     True))
    gap = max(1, width // 8)
    starts = np.arange(n_bands) * (width + gap)
    for ax, (label, cube, cmap, limits, bar) in zip(axes, rows, strict=True):
        mosaic = np.full((height, starts[-1] + width), np.nan)
        for band, start in enumerate(starts):
            mosaic[:, start:start + width] = cube[band]
        palette = colormaps[cmap].with_extremes(bad="white")
        shown = ax.imshow(mosaic, cmap=palette, vmin=limits[0], vmax=limits[1],
                          interpolation="nearest")
        for start in starts:
            ax.add_patch(Rectangle((start - 0.5, -0.5), width, height, fill=False, lw=0.8))
        if outline is not None and outline.any():
            _draw_outline(ax, outline, starts)
        ax.set_axis_off()
        ax.text(-0.01, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=9)
        if bar:
            fig.colorbar(shown, ax=ax, shrink=0.9, aspect=8, pad=0.01)
    for start, name in zip(starts, band_names, strict=True):
        axes[0].text(start + width / 2, -1, str(name), ha="center", va="bottom", fontsize=9)
    fig.suptitle(_wrap(f"{title}\nmethod rows: one colour scale per row (clipped at the 99.5th "
                       f"percentile of |value|), so bands are comparable", fig.get_figwidth()),
                 fontsize=10.5)
    return fig


def _draw_outline(ax: Axes, outline: np.ndarray, starts: np.ndarray) -> None:
    """The border of the `outline` pixels (H, W) on each map of a row starting at `starts`."""
    height, width = outline.shape
    mosaic = np.zeros((height + 2, starts[-1] + width + 2))  # a margin: closed borders
    for start in starts:
        mosaic[1:-1, start + 1:start + 1 + width] = outline
    ax.contour(np.arange(-1, mosaic.shape[1] - 1), np.arange(-1, height + 1), mosaic,
               levels=[0.5], colors="cyan", linewidths=0.9)


def agreement_matrix(agreement: pd.DataFrame, *,
                     method_info: Mapping[str, Mapping] | None = None,
                     feature: str = "band") -> Figure:
    """Method × method heat map of the mean Spearman ρ between band (`feature`) rankings,
    values annotated."""
    labels = [_info(str(m), method_info)["label"] for m in agreement.index]
    size = 0.55 * len(labels) + 0.08 * max(len(label) for label in labels) + 2.0
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.subplots()
    image = _heatmap(ax, agreement.to_numpy(dtype=float), labels, labels, signed=True,
                     fmt="{:.2f}", vmax=1.0)
    ax.tick_params(axis="x", labelrotation=45)
    for tick in ax.get_xticklabels():
        tick.set(horizontalalignment="right", rotation_mode="anchor")
    fig.colorbar(image, ax=ax, label="Spearman ρ", shrink=0.8)
    ax.set_title(f"Agreement of {feature} rankings between methods\n"
                 "(mean Spearman ρ: 1 = same order, 0 = unrelated, −1 = reversed)", fontsize=10)
    return fig


def class_target_heatmap(importance: pd.DataFrame, method: str,
                         band: str | Sequence[str] | None = None, *, grouping: str = "true_class",
                         value: str = "share",
                         method_info: Mapping[str, Mapping] | None = None) -> Figure:
    """Class × target matrices (target mode "all"): how a band pushes images of class k toward c.

    `band` is one band, a list of bands, or None for a grid of every band on one colour scale.
    """
    info = _info(method, method_info)
    rows = _rows(importance, method, grouping, self_target=False)
    all_bands = _bands(rows)
    bands = all_bands if band is None else [band] if isinstance(band, str) else list(band)
    unknown = sorted(set(bands) - set(all_bands))
    if unknown:
        raise ValueError(f"unknown band(s) {unknown}; known: {all_bands}")
    column = _VALUE_COLUMNS[value][0]
    targets = list(pd.unique(rows["target"]))
    tables = [_pivot(rows[rows["band"] == b], column, "class", "target", targets)
              for b in bands]
    classes = list(tables[0].index)
    stack = np.stack([t.to_numpy(dtype=float) for t in tables])
    factor, fmt, suffix = _display(stack, value)
    stack = stack * factor
    signed = _is_signed(info, stack)
    label_w = 0.075 * max(len(str(c)) for c in classes + targets)
    panel = 0.42 * max(len(classes), len(targets)) + 0.6
    fig, axes, ncols = _panel_figure(len(bands), (panel, panel), (label_w + 1.4, label_w + 1.0))
    annotate = fmt if stack[0].size <= (100 if len(bands) == 1 else 36) else None
    for k, (ax, name, values) in enumerate(zip(axes, bands, stack, strict=True)):
        image = _heatmap(ax, values, classes, targets, signed=signed, fmt=annotate,
                         vmax=_absmax(stack))
        ax.set_title(str(name), fontsize=10, fontweight="bold")
        if k % ncols:
            ax.set_yticklabels([])
        else:
            ax.set_ylabel("images of class")
        if k < ncols:
            ax.tick_params(axis="x", labelrotation=90, top=True, labeltop=True,
                           bottom=False, labelbottom=False)
            ax.set_xlabel("target class")
            ax.xaxis.set_label_position("top")
        else:
            ax.set_xticklabels([])
    fig.colorbar(image, ax=axes, label=f"{value}{suffix}", shrink=0.7)
    fig.suptitle(_wrap(f"{info['label']} — {_value_text(info, value)}\nrow = images of a class, "
                       f"column = target class the band pushes them toward; "
                       f"{_GROUPING_TEXT.get(grouping, grouping)}", fig.get_figwidth()),
                 fontsize=10.5)
    return fig


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> None:
    """Write the figure as PNG atomically, then release it (also from pyplot, if it made it)."""
    write_bytes(path, figure_png(fig, dpi))
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)


def write_figures(sections: Mapping[Key, Sequence[tuple[str, str, Figure | Callable[[], Figure]]]],
                  folder: os.PathLike) -> dict[Key, list[tuple[str, bytes]]]:
    """Write each section's (file stem, caption, figure) as folder/stem.png, and give per section
    its (caption, PNG bytes) pairs. A figure given as a function that draws it (a `Drawing`'s)
    is drawn in a worker process when there are enough of them to repay starting the workers;
    its PNG is the same either way."""
    folder = Path(folder)
    figures = [(folder / f"{stem}.png", figure)
               for items in sections.values() for stem, _, figure in items]
    drawn = [(path, figure) for path, figure in figures if isinstance(figure, Figure)]
    to_draw = [(path, figure) for path, figure in figures if not isinstance(figure, Figure)]
    workers = _drawing_workers(len(to_draw))
    if workers > 1:
        _draw_in_workers(to_draw, drawn, workers)
    else:
        for path, figure in figures:
            save_figure(figure if isinstance(figure, Figure) else figure(), path)
    return {key: [(caption, (folder / f"{stem}.png").read_bytes()) for stem, caption, _ in items]
            for key, items in sections.items()}


def _drawing_workers(n_figures: int) -> int:
    """Processes to draw `n_figures` in: one per core where forking is safe and there are enough
    figures for each worker to repay its start (a fork, plus sending it the tables); else 1."""
    if (not sys.platform.startswith("linux") or n_figures < FIGURES_PER_WORKER
            or _ray_running()):  # Ray's threads must not be forked
        return 1
    cores = len(os.sched_getaffinity(0))
    return max(1, min(cores, n_figures // FIGURES_PER_WORKER))


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _draw_in_workers(to_draw: list[tuple[Path, Callable[[], Figure]]],
                     drawn: list[tuple[Path, Figure]], workers: int) -> None:
    """Draw and write `to_draw` in `workers` forked processes, and `drawn` here meanwhile. On
    Ctrl-C or an error, figures not started are dropped and the running ones awaited, so that
    no worker writes into a folder being removed."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_worker_signals)
    try:
        pending = [pool.submit(_draw_and_save, draw, path) for path, draw in to_draw]
        for path, figure in drawn:
            save_figure(figure, path)
        for future in pending:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_signals() -> None:
    """A drawing worker leaves Ctrl-C to its parent, which stops the pool, and ends on SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _draw_and_save(draw: Callable[[], Figure], path: Path) -> None:
    save_figure(draw(), path)


def _distinct_colours(names: Sequence[str]) -> dict[str, tuple]:
    """One distinct colour per name (method or class), stable across figures."""
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def randomisation_bars(table: pd.DataFrame, *, threshold: float = 0.5, stage: str = "all layers",
                       method_info: Mapping[str, Mapping] | None = None) -> Figure:
    """Per method, trained-vs-randomised similarity with every layer random: Spearman's ρ of the
    class band rankings and of the per-band maps; methods at or above `threshold` are flagged."""
    rows = table[table["stage"] == stage]
    labels = [_info(m, method_info)["label"] for m in rows["method"]]
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(6.5, 0.75 * len(rows) + 2.5), 4.6), layout="constrained")
    ax = fig.subplots()
    width = 0.38
    for offset, column, colour, name in ((-width / 2, "rank_rho", _TOP, "band ranking (per class)"),
                                         (width / 2, "map_rho", "#4a78b0", "per-band maps |A|")):
        values = rows[column].to_numpy(dtype=float)
        ax.bar(x + offset, np.nan_to_num(values), width, color=colour, label=name)
        for xi, v in zip(x + offset, values, strict=True):
            if not np.isfinite(v):
                ax.text(xi, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.axhline(threshold, color="#c53030", lw=1.2, ls="--", label=f"flag at ρ ≥ {threshold:g}")
    ax.axhline(0, color="black", lw=0.7)
    flagged = rows["flagged"].to_numpy(dtype=bool)
    ax.set_xticks(x, labels=[f"⚠ {lab}" if f else lab for lab, f in zip(labels, flagged,
                                                                          strict=True)])
    ax.tick_params(axis="x", labelrotation=35)
    for tick, f in zip(ax.get_xticklabels(), flagged, strict=True):
        tick.set(horizontalalignment="right", rotation_mode="anchor",
                 color="#c53030" if f else "black")
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("Spearman ρ, trained vs randomised")
    ax.grid(axis="y", lw=0.4, alpha=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(_wrap("Model randomisation, every layer re-drawn: a method that explains the "
                       "model should change (ρ near 0). ⚠ = band ranking barely changed",
                       fig.get_figwidth()), fontsize=10, loc="left")
    return fig


def randomisation_cascade(table: pd.DataFrame, *,
                          method_info: Mapping[str, Mapping] | None = None) -> Figure:
    """Trained-vs-randomised Spearman's ρ as layers are re-drawn from the output down: band
    rankings (left) and per-band maps (right), one line per method."""
    methods = list(pd.unique(table["method"]))
    colours = _distinct_colours(methods)
    stages = table.drop_duplicates("layers_randomised").sort_values("layers_randomised")
    fig = Figure(figsize=(11.5, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, column, title in ((axes[0], "rank_rho", "band ranking per class (mean over classes)"),
                              (axes[1], "map_rho", "per-band maps |A| (mean over images, bands)")):
        for method in methods:
            rows = table[table["method"] == method].sort_values("layers_randomised")
            if rows[column].notna().any():
                ax.plot(rows["layers_randomised"], rows[column], marker="o", ms=4,
                        color=colours[method], label=_info(method, method_info)["label"])
        ax.set_xticks(stages["layers_randomised"], labels=stages["stage"])
        ax.tick_params(axis="x", labelrotation=20)
        ax.axhline(0, color="black", lw=0.7)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layers re-drawn, from the output down")
        ax.grid(lw=0.4, alpha=0.6)
    axes[0].set_ylabel("Spearman ρ, trained vs randomised")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.suptitle("Cascading model randomisation: similarity to the trained model's explanation",
                 fontsize=10.5)
    return fig


def deletion_curves(curves: pd.DataFrame, method: str, *, baseline: str,
                    metric: str = "accuracy",
                    method_info: Mapping[str, Mapping] | None = None) -> Figure:
    """Per class: accuracy (or mean target score) as bands are deleted in the method's order
    (most important first) and inserted into an all-baseline image, beside the reverse order and
    random orders (mean ± 1 std)."""
    info = _info(method, method_info)
    rows = curves[curves["baseline"] == baseline]
    classes = list(pd.unique(rows["class"]))
    fig, axes, ncols = _panel_figure(len(classes), (3.7, 2.9), (0.5, 1.2), max_cols=3,
                                     sharey=True)
    styles = {"deletion": "#d95f02", "insertion": "#1b7837"}
    for ax, cls in zip(axes, classes, strict=True):
        block = rows[rows["class"] == cls]
        for curve, colour in styles.items():
            part = block[block["curve"] == curve]
            random = part[part["order"].str.startswith("random:")].groupby("fraction")[metric]
            mean, std = random.mean(), random.std(ddof=1).fillna(0)
            low, high = mean - std, mean + std
            if metric == "accuracy":
                low, high = low.clip(0, 1), high.clip(0, 1)
            ax.fill_between(mean.index, low, high, color=colour, alpha=0.15, lw=0)
            ax.plot(mean.index, mean, color=colour, lw=1, ls=":")
            own = part[part["order"] == method].sort_values("step")
            ax.plot(own["fraction"], own[metric], color=colour, lw=2, marker="o", ms=3)
            rev = part[part["order"] == f"reverse:{method}"].sort_values("step")
            ax.plot(rev["fraction"], rev[metric], color=colour, lw=1, ls="--")
        ax.set_title(str(cls), fontsize=10)
        ax.grid(lw=0.4, alpha=0.6)
        ax.set_xlim(0, 1)
    for ax in axes[::ncols]:
        ax.set_ylabel("accuracy" if metric == "accuracy" else "mean target score")
    for ax in axes[-ncols:]:
        ax.set_xlabel("fraction of bands deleted / inserted")
    fig.suptitle(_wrap(
        f"{info['label']} — band deletion (orange) and insertion (green), baseline '{baseline}': "
        f"thick = the method's order, dashed = its reverse, dotted with band = random orders "
        f"(mean ± 1 std). Faithful: deletion below random, insertion above.",
        fig.get_figwidth()), fontsize=10)
    return fig


def faithfulness_gaps(faithfulness: pd.DataFrame, *, metric: str = "accuracy",
                      method_info: Mapping[str, Mapping] | None = None) -> Figure:
    """Method × baseline heat maps of the area between each method's curve and the random orders'
    (mean over classes), for deletion and insertion; positive = more faithful than random."""
    rows = faithfulness[faithfulness["metric"] == metric]
    methods = list(pd.unique(rows["method"]))
    baselines = list(pd.unique(rows["baseline"]))
    labels = [_info(m, method_info)["label"] for m in methods]
    tables = [rows[rows["curve"] == curve].pivot_table(index="method", columns="baseline",
                                                       values="gap", aggfunc="mean")
              .reindex(index=methods, columns=baselines).to_numpy(dtype=float)
              for curve in ("deletion", "insertion")]
    vmax = _absmax(np.stack(tables))
    columns = [_images_per_class(rows[rows["baseline"] == b]) for b in baselines]
    fig = Figure(figsize=(1.3 * len(baselines) * 2 + 0.08 * max(map(len, labels)) + 2.5,
                          0.38 * len(methods) + 2.0), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, curve, values in zip(axes, ("deletion", "insertion"), tables, strict=True):
        image = _heatmap(ax, values, labels, columns, signed=True, fmt="{:.2f}", vmax=vmax)
        ax.set_title(curve, fontsize=10)
        ax.set_xlabel("baseline of a removed band")
    fig.colorbar(image, ax=list(axes), label=f"area gap to random orders ({metric})", shrink=0.9)
    fig.suptitle(_wrap(f"Faithfulness: area between each method's curve and random band orders "
                       f"({metric}, mean over classes); > 0 = the model follows the method's "
                       f"ranking more than a random one; stable across columns = independent of "
                       f"the baseline", fig.get_figwidth()), fontsize=10)
    return fig


def _images_per_class(rows: pd.DataFrame) -> str:
    """A baseline's column label: its name and the images its curves took (all classes)."""
    if "images" not in rows:  # a table written before the checks counted their images
        return str(rows["baseline"].iloc[0])
    first = rows.drop_duplicates("class")
    return f"{first['baseline'].iloc[0]}\n{int(first['images'].sum())} images"


def agreement_by_class(pairs: pd.DataFrame, *, measure: str = "kendall",
                       method_info: Mapping[str, Mapping] | None = None) -> Figure:
    """Per class, a method × method heat map of Kendall's τ (or Spearman's ρ) between band
    rankings."""
    methods = list(pd.unique(pairs["method_a"]))
    labels = [_info(m, method_info)["label"] for m in methods]
    classes = list(pd.unique(pairs["class"]))
    panel = 0.36 * len(methods) + 0.8
    label_w = 0.07 * max(map(len, labels))
    fig, axes, ncols = _panel_figure(len(classes), (panel, panel), (label_w + 1.2, label_w + 1.0),
                                     max_cols=3)
    for i, (ax, cls) in enumerate(zip(axes, classes, strict=True)):
        block = pairs[pairs["class"] == cls].pivot(index="method_a", columns="method_b",
                                                   values=measure)
        values = block.reindex(index=methods, columns=methods).to_numpy(dtype=float)
        image = _heatmap(ax, values, labels, labels, signed=True,
                         fmt="{:.1f}" if len(methods) <= 6 else None, vmax=1.0)
        ax.set_title(str(cls), fontsize=10)
        if i % ncols:
            ax.set_yticklabels([])
        ax.tick_params(axis="x", labelrotation=90)
        if i < len(classes) - ncols:
            ax.set_xticklabels([])
    symbol = "Kendall's τ" if measure == "kendall" else "Spearman's ρ"
    fig.colorbar(image, ax=axes, label=symbol, shrink=0.7)
    fig.suptitle(f"Agreement of band rankings between methods, per class ({symbol})",
                 fontsize=10.5)
    return fig


def consensus_intervals(consensus: pd.DataFrame, *, top: int = 8) -> Figure:
    """Per class, the consensus rank of the top bands with its 95% bootstrap interval over
    images; the number above each band is the chance it is the consensus top band."""
    classes = list(pd.unique(consensus["class"]))
    n_show = min(top, consensus.groupby("class").size().max())
    fig, axes, ncols = _panel_figure(len(classes), (max(3.2, 0.42 * n_show + 1.0), 2.8),
                                     (0.6, 1.0), max_cols=3, sharey=True)
    for ax, cls in zip(axes, classes, strict=True):
        rows = consensus[consensus["class"] == cls].head(n_show)
        x = np.arange(len(rows))
        rank = rows["consensus_rank"].to_numpy(dtype=float)
        err = np.clip([rank - rows["rank_ci_low"], rows["rank_ci_high"] - rank], 0, None)
        ax.errorbar(x, rank, yerr=err, fmt="o", color=_TOP, ecolor="#333333", capsize=3, ms=5)
        for xi, r, p in zip(x, rows["rank_ci_low"], rows["p_top1"], strict=True):
            ax.text(xi, r - 0.35, f"{p:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, labels=rows["band"])
        _rotate_if_crowded(ax, list(rows["band"]), 0.42 * n_show)
        ax.set_title(f"{cls} (n={rows['n'].iloc[0]:g})", fontsize=10)
        ax.grid(axis="y", lw=0.4, alpha=0.6)
    axes[0].set_ylim(n_show + 0.6, 0.2)
    for ax in axes[::ncols]:
        ax.set_ylabel("consensus rank")
    fig.suptitle(_wrap("Consensus band ranking over methods (1 = top) with 95% bootstrap "
                       "intervals over images; number = chance the band is the consensus top "
                       "band", fig.get_figwidth()), fontsize=10.5)
    return fig


def completeness_plot(table: pd.DataFrame, n_steps: int) -> Figure:
    """Integrated Gradients' completeness: band sum against f(x) − f(baseline) per image at the
    run's number of steps (left), and |delta| relative to the gain by number of steps (right)."""
    fig = Figure(figsize=(10.5, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    rows = table[table["n_steps"] == n_steps]
    left.scatter(rows["output_gain"], rows["band_sum"], s=10, color=_TOP, alpha=0.7)
    lo = float(min(rows["output_gain"].min(), rows["band_sum"].min()))
    hi = float(max(rows["output_gain"].max(), rows["band_sum"].max()))
    left.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--")
    left.set_xlabel("f(x) − f(baseline), explained class")
    left.set_ylabel("sum of the band scores")
    left.set_title(f"{n_steps} steps: on the line = complete", fontsize=10)
    left.grid(lw=0.4, alpha=0.6)
    steps = sorted(pd.unique(table["n_steps"]))
    values = [np.maximum(table.loc[table["n_steps"] == s, "relative_delta"].to_numpy(), 1e-8)
              for s in steps]
    right.boxplot(values, tick_labels=[f"{s}\n{len(v)} images" for s, v in zip(steps, values,
                                                                           strict=True)],
                  showfliers=True)
    right.set_yscale("log")
    right.axhline(0.05, color="#c53030", lw=1, ls="--", label="5%")
    right.axhline(0.01, color="#2f855a", lw=1, ls="--", label="1%")
    right.set_xlabel("integration steps")
    right.set_ylabel("|delta| / |f(x) − f(baseline)|")
    right.set_title("convergence: the delta should shrink with more steps", fontsize=10)
    right.legend(fontsize=8)
    right.grid(axis="y", lw=0.4, alpha=0.6)
    fig.suptitle("Completeness of Integrated Gradients: do the bands add up to the output "
                 "change?", fontsize=10.5)
    return fig


def importance_spectrum(importance: pd.DataFrame, method: str, *, grouping: str = "true_class",
                        value: str = "share", method_info: Mapping[str, Mapping] | None = None,
                        gaps: Gaps = ()) -> Figure:
    """Importance against centre wavelength: one line per class with its 95% interval band,
    the bands named along the top; lines stop at `gaps` (removed bands). Needs the
    wavelength_nm column filled."""
    info = _info(method, method_info)
    rows = _rows(importance, method, grouping, self_target=True)
    if "wavelength_nm" not in rows or rows["wavelength_nm"].isna().any():
        raise ValueError("importance_spectrum needs every band's wavelength (a sensor preset)")
    bands = _bands(rows)
    wavelength = rows.drop_duplicates("band").set_index("band")["wavelength_nm"][bands].to_numpy()
    mean_col, low_col, high_col = _VALUE_COLUMNS[value]
    factor, _, suffix = _display(_pivot(rows, mean_col, "class", "band", bands).to_numpy(float),
                                 value)
    fig = Figure(figsize=(9.5, 4.6), layout="constrained")
    ax = fig.subplots()
    colours = _distinct_colours(list(pd.unique(rows["class"])))
    for cls, colour in colours.items():
        mean, low, high = (_pivot(rows[rows["class"] == cls], col, "class", "band", bands)
                           .to_numpy(float)[0] * factor for col in (mean_col, low_col, high_col))
        x, (mean, low, high) = _broken(wavelength, (mean, low, high), gaps)
        ax.plot(x, mean, marker="o", ms=4, lw=1.4, color=colour, label=str(cls))
        ax.fill_between(x, low, high, color=colour, alpha=0.15, lw=0)
    ax.axhline(0, color="black", lw=0.7)
    top = ax.secondary_xaxis("top")
    top.set_xticks(wavelength, labels=bands, fontsize=7, rotation=90)
    ax.set_xlabel("centre wavelength (nm)")
    ax.set_ylabel(f"{value}{suffix}")
    ax.grid(lw=0.4, alpha=0.6)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(_wrap(f"{info['label']} against wavelength — {_value_text(info, value)}; "
                       f"{_GROUPING_TEXT.get(grouping, grouping)}, shading = 95% interval",
                       fig.get_figwidth()), fontsize=10, loc="left")
    return fig


ClassSpectra = tuple[np.ndarray, Mapping[str, np.ndarray]]  # band centres (B,), class → (B,)
Gaps = Sequence[tuple[float, float]]  # (last centre before, first centre after) removed bands


def region_spectrum(importance: pd.DataFrame, method: str, regions: Mapping[str, tuple[float, float]],
                    *, per_band: bool, grouping: str = "true_class", value: str = "share",
                    method_info: Mapping[str, Mapping] | None = None,
                    class_spectra: ClassSpectra | None = None, gaps: Gaps = (),
                    absorption: Mapping[str, tuple[float, float]] | None = None) -> Figure:
    """Importance against wavelength, one panel per class, the spectral regions shaded and named:
    a line per band with its 95% interval (`per_band`: a gradient method's band detail), or a
    step per region over its wavelengths (a method that removes regions whole). Lines and
    intervals stop at `gaps` (removed bands, hatched); `class_spectra` draws each class's mean
    spectrum under its curve (right axis); `absorption` windows ({name: (low, high) nm}) are
    shaded blue, with their shoulders lighter."""
    info = _info(method, method_info)
    rows = _rows(importance, method, grouping, self_target=True)
    features = _bands(rows)
    mean_col, low_col, high_col = _VALUE_COLUMNS[value]
    factor, _, suffix = _display(_pivot(rows, mean_col, "class", "band", features).to_numpy(float),
                                 value)
    classes = list(pd.unique(rows["class"]))
    fig = Figure(figsize=(9.5, 1.2 + 1.7 * len(classes)), layout="constrained")
    axes = fig.subplots(len(classes), 1, sharex=True, squeeze=False)[:, 0]
    if per_band:
        x = rows.drop_duplicates("band").set_index("band")["wavelength_nm"][features].to_numpy()
    else:  # each region drawn flat across its first to last band
        x = np.ravel([regions[f] for f in features])
    for ax, cls in zip(axes, classes, strict=True):
        mean, low, high = (_pivot(rows[rows["class"] == cls], col, "class", "band", features)
                           .to_numpy(float)[0] * factor for col in (mean_col, low_col, high_col))
        if not per_band:
            mean, low, high = (np.repeat(v, 2) for v in (mean, low, high))
        xs, (mean, low, high) = _broken(x, (mean, low, high), gaps)
        ax.plot(xs, mean, lw=1.3, color="tab:blue")
        ax.fill_between(xs, low, high, color="tab:blue", alpha=0.2, lw=0)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_ylabel(f"{cls}\n{value}{suffix}", fontsize=8)
        ax.tick_params(labelsize=7)
        backdrop = _spectrum_backdrop(ax, class_spectra, cls, gaps)
        _shade_regions(backdrop, regions)
        _shade_gaps_and_absorption(backdrop, gaps, absorption, label=ax is axes[0])
    for name, (low, high) in regions.items():
        axes[0].annotate(name, ((low + high) / 2, 1.0), xycoords=("data", "axes fraction"),
                         ha="center", va="bottom", fontsize=6.5, rotation=90)
    axes[-1].set_xlabel("wavelength (nm)")
    what = "per band" if per_band else "per region (removed whole)"
    extra = ("; grey line (right axis) = the class's mean spectrum" if class_spectra else "") + (
        "; hatched = no bands (removed)" if gaps else "") + (
        "; blue = water-vapour absorption, lighter = its shoulders" if absorption else "")
    fig.suptitle(_wrap(f"{info['label']} against wavelength, {what} — {_value_text(info, value)}; "
                       f"{_GROUPING_TEXT.get(grouping, grouping)}; shading = 95% interval, grey "
                       f"bands = spectral regions{extra}", fig.get_figwidth()), fontsize=10)
    return fig


def _broken(x: np.ndarray, ys: Sequence[np.ndarray], gaps: Gaps
            ) -> tuple[np.ndarray, list[np.ndarray]]:
    """`x` (increasing) and each of `ys` with a NaN put between neighbours on either side of a
    gap, so that lines and intervals are not drawn across removed bands."""
    x = np.asarray(x, dtype=float)
    cuts = [i + 1 for i in range(len(x) - 1)
            if any(x[i] <= before and x[i + 1] >= after for before, after in gaps)]
    return np.insert(x, cuts, np.nan), [np.insert(np.asarray(y, dtype=float), cuts, np.nan)
                                        for y in ys]


def _spectrum_backdrop(ax: Axes, class_spectra: ClassSpectra | None, cls: str,
                       gaps: Gaps) -> Axes:
    """The axes to draw shading on, behind the importance curve: with `class_spectra`, a twin
    axes holding the class's mean spectrum (right axis), beneath `ax`."""
    if class_spectra is None or cls not in class_spectra[1]:
        return ax
    back = ax.twinx()
    ax.set_zorder(back.get_zorder() + 1)
    ax.patch.set_visible(False)
    order = np.argsort(class_spectra[0], kind="stable")
    x, (spectrum,) = _broken(class_spectra[0][order], (class_spectra[1][cls][order],), gaps)
    back.plot(x, spectrum, color="0.35", lw=1.0)
    back.set_ylabel("mean spectrum", fontsize=7, color="0.35")
    back.tick_params(labelsize=6, colors="0.35")
    return back


def _shade_gaps_and_absorption(ax: Axes, gaps: Gaps,
                               absorption: Mapping[str, tuple[float, float]] | None, *,
                               label: bool, shoulder: float = 50.0) -> None:
    """Hatched spans over the gaps; blue spans over the absorption windows within the plotted
    wavelengths, lighter over their shoulders (`shoulder` nm either side), named when `label`."""
    for before, after in gaps:
        ax.axvspan(before, after, facecolor="none", edgecolor="0.6", hatch="///", lw=0, zorder=0)
    low, high = ax.get_xlim()
    for name, (start, end) in (absorption or {}).items():
        if end + shoulder < low or start - shoulder > high:
            continue
        ax.axvspan(start - shoulder, end + shoulder, color="#9ecae1", alpha=0.25, lw=0, zorder=0)
        ax.axvspan(start, end, color="#6baed6", alpha=0.35, lw=0, zorder=0)
        if label:
            ax.annotate(f"H₂O {name}", ((start + end) / 2, 0.02), xycoords=("data", "axes fraction"),
                        ha="center", va="bottom", fontsize=6.5, color="#08519c")
    ax.set_xlim(low, high)


def spectrum_maps(wavelength: np.ndarray, spectrum: np.ndarray, maps: Mapping[str, np.ndarray],
                  *, title: str, gaps: Gaps = (),
                  method_info: Mapping[str, Mapping] | None = None) -> Figure:
    """One pixel's explanation drawn along its spectrum: the spectrum (B,) on top, then per
    method the spectrum again, coloured band by band by that method's attribution (B,) on one
    symmetric scale per method (99.5th percentile of |value|). Lines stop at `gaps`."""
    order = np.argsort(wavelength, kind="stable")
    x, spectrum = np.asarray(wavelength, float)[order], np.asarray(spectrum, float)[order]
    fig = Figure(figsize=(9.5, 1.3 + 1.5 * (len(maps) + 1)), layout="constrained")
    axes = fig.subplots(len(maps) + 1, 1, sharex=True, squeeze=False)[:, 0]
    xs, (line,) = _broken(x, (spectrum,), gaps)
    axes[0].plot(xs, line, color="black", lw=1.2)
    axes[0].set_ylabel("input\nspectrum", fontsize=8)
    joined = np.array([not any(a <= before and b >= after for before, after in gaps)
                       for a, b in zip(x[:-1], x[1:], strict=True)], dtype=bool)
    segments = np.stack([np.column_stack([x[:-1], spectrum[:-1]]),
                         np.column_stack([x[1:], spectrum[1:]])], axis=1)[joined]
    for ax, (method, attribution) in zip(axes[1:], maps.items(), strict=True):
        values = np.asarray(attribution, float)[order]
        finite = np.abs(values[np.isfinite(values)])
        vmax = float(np.percentile(finite, 99.5)) if finite.size and finite.max() > 0 else 1.0
        signed = bool(finite.size and np.nanmin(values) < 0)
        colours = LineCollection(segments, cmap="RdBu_r" if signed else "magma_r",
                                 norm=Normalize(-vmax if signed else 0.0, vmax), lw=3.2)
        colours.set_array(((values[:-1] + values[1:]) / 2)[joined])
        ax.plot(xs, line, color="0.8", lw=0.8)
        ax.add_collection(colours)
        ax.set_ylabel(_wrap(_info(method, method_info)["label"], 1.2), fontsize=8)
        fig.colorbar(colours, ax=ax, shrink=0.9, aspect=8, pad=0.01)
    for ax in axes:
        ax.tick_params(labelsize=7)
        for before, after in gaps:
            ax.axvspan(before, after, facecolor="none", edgecolor="0.6", hatch="///", lw=0)
    axes[-1].set_xlabel("wavelength (nm)")
    fig.suptitle(_wrap(f"{title}\neach method's attribution along the spectrum (colour; one "
                       "scale per method, clipped at the 99.5th percentile of |value|)"
                       + ("; hatched = no bands (removed)" if gaps else ""),
                       fig.get_figwidth()), fontsize=10)
    return fig


def _shade_regions(ax: Axes, regions: Mapping[str, tuple[float, float]]) -> None:
    """Alternate grey spans over the regions' wavelengths."""
    for i, (low, high) in enumerate(regions.values()):
        ax.axvspan(low, high, color="0.85" if i % 2 else "0.93", lw=0, zorder=0)
