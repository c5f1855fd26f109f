"""Figures of per-band, per-class importance.

Every function returns a `matplotlib.figure.Figure` built without pyplot (no global state, no
window, any backend); `save_figure` writes it as PNG. `importance` is the engine's tidy table
(method, grouping, class, target, band, band_index, score, share, intervals, n, rank) and
`method_info` maps a method to {"label", "kind", "signed", "units"}; without it, titles fall back
to the method's name.
"""

from __future__ import annotations

import io
import math
import os
import sys
import tempfile
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

_SELF_TARGETS = ("true class", "predicted class")
DPI = 130

_GROUPING_TEXT = {
    "true_class": "mean over the images of each true class",
    "predicted_class": "mean over the images predicted as each class",
    "correct": "mean over the correctly classified images of each class",
    "misclassified": "mean over the misclassified images of each class",
}
_SCORE_TEXT = {
    "gradient": "sensitivity: mean |∂f/∂x| over the band's pixels",
    "attribution": "contribution: attribution summed over the band's pixels",
    "group": "effect of replacing the band by its baseline",
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
    """Band names in image order."""
    return list(rows.drop_duplicates("band").sort_values("band_index")["band"])


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


def _outline_row_max(ax: Axes, values: np.ndarray) -> None:
    """Draw a box around each row's largest finite value (the top band)."""
    for i, row in enumerate(values):
        if np.isfinite(row).any():
            j = int(np.nanargmax(row))
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.2, ec="black"))


def band_class_heatmap(importance: pd.DataFrame, method: str, *, grouping: str = "true_class",
                       value: str = "share",
                       method_info: Mapping[str, Mapping] | None = None) -> Figure:
    """Class × band heat map of one method's mean share (or score); boxes mark top bands."""
    info = _info(method, method_info)
    rows = _rows(importance, method, grouping, self_target=True)
    bands = _bands(rows)
    table = _pivot(rows, _VALUE_COLUMNS[value][0], "class", "band", bands)
    values = table.to_numpy(dtype=float)
    factor, fmt, suffix = _display(values, value)
    shown = values * factor
    width = 0.62 * len(bands) + 0.09 * max(len(str(c)) for c in table.index) + 2.2
    fig = Figure(figsize=(max(6.5, width), 0.42 * len(table) + 2.2), layout="constrained")
    ax = fig.subplots()
    image = _heatmap(ax, shown, table.index, bands, signed=_is_signed(info, shown),
                     fmt=fmt if shown.size <= 260 else None)
    _outline_row_max(ax, shown)
    _rotate_if_crowded(ax, bands, 0.62 * len(bands))
    ax.set_xlabel("band")
    ax.set_ylabel("class")
    fig.colorbar(image, ax=ax, label=f"{value}{suffix}", shrink=0.9)
    ax.set_title(_wrap(f"{info['label']} — {_value_text(info, value)}\n"
                       f"{_GROUPING_TEXT.get(grouping, grouping)}; box = top band of the class",
                       fig.get_figwidth()), fontsize=10, loc="left")
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
               value: str = "share", method_info: Mapping[str, Mapping] | None = None) -> Figure:
    """One bar panel per class: mean per band with its 95% interval, top band highlighted."""
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
                       f"interval; orange = top band", fig.get_figwidth()), fontsize=10.5)
    return fig


def methods_panel(importance: pd.DataFrame, *, grouping: str = "true_class", value: str = "rank",
                  method_info: Mapping[str, Mapping] | None = None) -> Figure:
    """Per class, a method × band heat map of every method's band rank (or share) side by side."""
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
    what = ("rank of each band (1 = most important, by mean share"
            + (f"; ranks ≥ {_RANK_SHADES} share the palest colour)" if clipped else ")")
            if value == "rank" else _value_text({}, value))
    fig.suptitle(_wrap(f"Band ranking by every method — {what}\n"
                       f"{_GROUPING_TEXT.get(grouping, grouping)}", fig.get_figwidth()),
                 fontsize=10.5)
    return fig


def band_maps(image: np.ndarray, maps: Mapping[str, np.ndarray], band_names: Sequence[str], *,
              title: str, method_info: Mapping[str, Mapping] | None = None) -> Figure:
    """One small map per input band: the image's bands in grey, then one row per method.

    Within a method row all bands share one colour scale (99.5th percentile of |value|), so bands
    are comparable; each input band is stretched on its own 2–98 percentiles.
    """
    n_bands = len(band_names)
    height, width = image.shape[1:]
    cell = max(0.6, min(1.3, (_MAX_WIDTH - 2.6) / n_bands))
    row_h = cell * height / width
    fig = Figure(figsize=(cell * n_bands + 2.6, row_h * (len(maps) + 1) + 1.2),
                 layout="constrained")
    axes = fig.subplots(len(maps) + 1, n_bands, squeeze=False)
    rows = [("input band\n(own 2–98% stretch)", image, "gray", None)]
    for method, attribution in maps.items():
        finite = np.abs(attribution[np.isfinite(attribution)])
        vmax = float(np.percentile(finite, 99.5)) if finite.size else 1.0
        signed = bool(finite.size and np.nanmin(attribution) < 0)
        rows.append((_info(method, method_info)["label"], attribution,
                     "RdBu_r" if signed else "magma", (-vmax if signed else 0.0, vmax or 1.0)))
    for row_axes, (label, cube, cmap, limits) in zip(axes, rows, strict=True):
        for band, ax in enumerate(row_axes):
            if limits is None:
                low, high = np.nanpercentile(cube[band], [2, 98])
                shown = ax.imshow(cube[band], cmap=cmap, vmin=low, vmax=max(high, low + 1e-12))
            else:
                shown = ax.imshow(cube[band], cmap=cmap, vmin=limits[0], vmax=limits[1])
            ax.set_xticks([])
            ax.set_yticks([])
        row_axes[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        if limits is not None:
            fig.colorbar(shown, ax=list(row_axes), shrink=0.9, aspect=8, pad=0.01)
    for ax, name in zip(axes[0], band_names, strict=True):
        ax.set_title(str(name), fontsize=9)
    fig.suptitle(_wrap(f"{title}\nmethod rows: one colour scale per row (clipped at the 99.5th "
                       f"percentile of |value|), so bands are comparable", fig.get_figwidth()),
                 fontsize=10.5)
    return fig


def agreement_matrix(agreement: pd.DataFrame, *,
                     method_info: Mapping[str, Mapping] | None = None) -> Figure:
    """Method × method heat map of the mean Spearman ρ between band rankings, values annotated."""
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
    ax.set_title("Agreement of band rankings between methods\n"
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> None:
    """Write the figure as PNG atomically, then release it (also from pyplot, if it made it)."""
    write_bytes_atomic(path, figure_png(fig, dpi))
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
