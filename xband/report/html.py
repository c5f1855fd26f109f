"""One self-contained HTML page with the summary, tables and figures of an xband run."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure

from xband.report.plots import figure_png

FigureLike = bytes | Figure

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2733;
background:#f4f6f8;line-height:1.45}
main{max-width:1280px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{margin:0 0 4px;font-size:1.7em}h2{margin-top:2em;border-bottom:2px solid #d8dee6;
padding-bottom:4px}h3{margin-bottom:6px}
nav{margin:12px 0 8px;font-size:.92em}nav a{margin-right:14px;color:#2a5d9f;text-decoration:none}
.lead{font-size:1.05em;color:#3c4a5a}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:14px}
.card{border:1px solid #d8dee6;border-radius:6px;padding:10px 14px;background:#fafbfc}
.card h3{margin-top:0}
.card table{table-layout:fixed;width:100%}
.card th{width:42%}
.card td,.card th{overflow-wrap:anywhere;white-space:normal}
.output{border-left:5px solid #2a5d9f;background:#eef4fb;padding:10px 14px;margin:16px 0}
.howto{border-left:5px solid #b7791f;background:#fdf6e9;padding:10px 18px;margin:16px 0}
.howto li{margin:3px 0}
.ok{color:#fff;background:#2f855a;padding:1px 8px;border-radius:10px}
.bad{color:#fff;background:#c53030;padding:1px 8px;border-radius:10px}
table{border-collapse:collapse;font-size:.88em;margin:6px 0 12px}
th,td{border:1px solid #d8dee6;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td{overflow-wrap:anywhere}.scroll td{white-space:nowrap}
tbody tr:nth-child(even){background:#f8f9fb}
.scroll{overflow-x:auto}
figure{margin:14px 0 26px}figure img{max-width:100%;height:auto;border:1px solid #e3e7ec}
figcaption{font-size:.9em;color:#3c4a5a;margin-top:4px}
code{background:#eef1f5;padding:0 4px;border-radius:3px}
.verdict{border:1px solid #d8dee6;border-left:5px solid #2f855a;border-radius:6px;
padding:4px 16px 8px;margin:10px 0 16px}.verdict.unchecked{border-left-color:#b7791f}
.verdict h2{margin:6px 0 4px;border:0;padding:0;font-size:1.3em}
.vgrid{display:grid;grid-template-columns:minmax(0,5fr) minmax(0,6fr);gap:18px;align-items:start}
.verdict ul{margin:4px 0 8px;padding-left:18px}.verdict li{margin:3px 0}
.verdict figure{margin:4px 0}.verdict figure img{max-height:420px;width:auto}
.vstatus{font-size:.88em;color:#3c4a5a;margin:6px 0}
"""

_HOWTO = {
    "gradient (saliency)": (
        "sensitivity: how strongly the output changes per unit change of the band, mean |∂f/∂x| "
        "over the band's pixels; always ≥ 0."),
    "attribution (Input×Gradient, Integrated Gradients, GradientSHAP)": (
        "contribution in the units of the output, summed over the band's pixels; signed "
        "(negative = pushes away from the target). Integrated Gradients' bands add up to "
        "f(x) − f(baseline)."),
    "perturbation (band ablation, Shapley, LIME, KernelSHAP)": (
        "effect of replacing the whole band by its baseline: one value per band, not summed over "
        "pixels; signed."),
    "permutation": "drop in accuracy when the band is shuffled across images (dataset level).",
    "share": (
        "s_b / Σ|s| per image, averaged over the images of a class: puts every method on one "
        "scale; ranks use it."),
    "the scale trap": (
        "raw saliency is per unit of the band's own values, so a band with a small spread (e.g. "
        "cirrus B10) or one the model standardises internally can rank first while removing it "
        "changes nothing. Compare scaled saliency (gradient × band standard deviation) and the "
        "effect-based methods (ablation, Shapley, permutation, Integrated Gradients) before "
        "trusting a saliency ranking."),
}


def _e(value: object) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def _fmt(value: object) -> str:
    """Short, escaped text of a summary value: floats to 4 significant digits, lists as
    comma-separated items, dicts as "key: value" pairs."""
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, float):
        return _e(f"{value:.4g}")
    if isinstance(value, Mapping):
        return "; ".join(f"{_e(k)}: {_fmt(v)}" for k, v in value.items()) or "–"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value) or "–"
    return _e(value)


def _kv_table(mapping: Mapping) -> str:
    """Two-column key/value table."""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in mapping.items())
    return f"<table>{rows}</table>"


def _frame(table: pd.DataFrame) -> str:
    """A DataFrame as an escaped HTML table (floats to 3 significant digits; wavelengths, the
    columns named …_nm, in nm to 0.1)."""
    nm = {c: (lambda v: "–" if v != v else f"{v:.1f}") for c in table.columns
          if str(c).endswith("_nm")}
    text = table.to_html(escape=True, border=0, na_rep="–", float_format=lambda v: f"{v:.3g}",
                         formatters=nm)
    return f'<div class="scroll">{text}</div>'


def _image(figure: FigureLike, caption: str) -> str:
    """A figure embedded as a base64 PNG data URI with its caption."""
    png = figure if isinstance(figure, bytes) else figure_png(figure)
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _anchor(name: str) -> str:
    """An id for a section name."""
    return "s-" + "".join(c if c.isalnum() else "-" for c in name.lower())


def _section(title: str, body: str) -> str:
    return f'<section id="{_anchor(title)}"><h2>{_e(title)}</h2>{body}</section>'


def output_space_statement(model: Mapping) -> str:
    """One sentence saying which model output the scores explain."""
    space = model.get("output_space", "logits")
    kind = model.get("final_activation") or ("softmax" if model.get("ends_with_softmax")
                                             else "none")
    if space == "logits" and kind != "none":
        return (f"Scores are for logits: the model's final {kind} was stripped, so 'attribution' "
                "and 'perturbation' scores are in logit units.")
    if space == "logits":
        return ("Scores are for the model's raw outputs (logits): the model ends without a "
                "softmax or sigmoid.")
    if kind == "none":
        applied = "sigmoid" if model.get("multi_label") else "softmax"
        return (f"Scores are for probabilities: the {applied} of the model's raw outputs "
                "(logits), applied by xband, between 0 and 1.")
    if kind == "sigmoid":
        return ("Scores are for the model's probabilities output (one sigmoid per label, between "
                "0 and 1).")
    return f"Scores are for the model's {space} output (class probabilities, between 0 and 1)."


def _accuracy_card(accuracy: Mapping) -> dict:
    """Accuracy overall and per class, (multi-label) precision, recall and F1 per label, or
    (segmentation) pixel accuracy and IoU per class."""
    if accuracy.get("segmentation"):
        return _pixel_card(accuracy)
    if not accuracy.get("multi_label"):
        return {"overall": accuracy.get("overall"), **(accuracy.get("per_class") or {})}
    if not accuracy.get("per_class"):
        return {"per label": "no labels given"}

    def prf(row: Mapping) -> str:
        return (f"P {row['precision']:.2f} · R {row['recall']:.2f} · F1 {row['f1']:.2f} "
                f"(n {row['support']})")

    return {"exact match": accuracy.get("exact_match"), "micro average": prf(accuracy["micro"]),
            **{name: prf(row) for name, row in accuracy["per_class"].items()}}


def _pixel_card(accuracy: Mapping) -> dict:
    """A segmentation run's accuracy: share of labelled pixels right, mean IoU, per class."""
    if not accuracy.get("per_class"):
        return {"per pixel": "no label masks given"}

    def number(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    return {"pixel accuracy": accuracy.get("overall"), "mean IoU": accuracy.get("mean_iou"),
            **{name: f"acc {number(row['pixel_accuracy'])} · IoU {number(row['iou'])} "
                     f"({row['pixels']} px)" for name, row in accuracy["per_class"].items()}}


def _header(summary: Mapping) -> str:
    model, data = summary.get("model") or {}, summary.get("data") or {}
    accuracy = summary.get("accuracy") or {}
    hidden = ("ends_with_softmax", "output_space", "output_note")  # said in the output-space line
    title = ("Accuracy per pixel" if accuracy.get("segmentation") else
             "Accuracy per label" if accuracy.get("multi_label") else "Accuracy")
    model_card = {k: v for k, v in model.items() if k not in hidden}
    if model.get("sha256"):
        model_card["sha256"] = str(model["sha256"])[:16] + "…"
    data_card = {k: v for k, v in data.items() if k != "class_counts"}
    data_card.update({f"images of {k}": v for k, v in (data.get("class_counts") or {}).items()})
    cards = "".join(f'<div class="card"><h3>{name}</h3>{_kv_table(card)}</div>' for name, card in
                    (("Model", model_card), ("Data", data_card),
                     (title, _accuracy_card(accuracy))))
    return (f'<div class="grid">{cards}</div>'
            f'<p class="output"><b>Output space.</b> {_e(output_space_statement(model))}</p>')


def _verdict(verdict: Mapping, figure: FigureLike | None) -> str:
    """The answer first: one sentence per class beside the heat map of the trusted consensus,
    and which methods the verdict trusts and why the others were left out."""
    items = "".join(f"<li><b>{_e(c['class'])}</b>: "
                    f"{_e(c['sentence'].removeprefix(str(c['class']) + ': '))}</li>"
                    for c in verdict["classes"])
    trusted = "trusted " if verdict["checks_run"] else ""
    feature = verdict.get("feature", "band")
    picture = "" if figure is None else _image(
        figure, f"Mean rank of each {feature} over the {trusted}methods, per class (1 = most "
        f"important; box = the class's top {feature}).")
    kind = "verdict" if verdict["checked"] else "verdict unchecked"
    return (f'<section id="s-verdict" class="{kind}"><h2>Verdict: the {feature}s each class '
            f'relies on</h2><div class="vgrid"><div><ul>{items}</ul><p class="vstatus">'
            f'{_e(verdict["status"])}</p></div>{picture}</div></section>')


def _fidelity(fidelity: Mapping | None) -> str:
    if not fidelity:
        return "<p>No conversion: the model was loaded natively; there is nothing to compare.</p>"
    badge = ('<span class="ok">passed</span>' if fidelity.get("passed")
             else '<span class="bad">FAILED</span>')
    rest = {k: v for k, v in fidelity.items() if k != "passed"}
    return (f"<p>The converted model was run beside the reference on probe inputs and their "
            f"outputs compared: {badge}</p>{_kv_table(rest)}")


def _notes(notes: Sequence[str]) -> str:
    if not notes:
        return "<p>No fallbacks or warnings.</p>"
    return "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"


def _howto() -> str:
    items = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in _HOWTO.items())
    return f'<div class="howto"><ul>{items}</ul></div>'


def _run_details(summary: Mapping) -> str:
    run = {"seed": summary.get("seed"), "run time (s)": summary.get("run_time_s")}
    parts = [f"<h3>Run</h3>{_kv_table(run)}",
             f"<h3>Settings</h3>{_kv_table(summary.get('settings') or {})}"]
    methods = summary.get("methods") or {}
    if methods:
        rows = "".join(f"<tr><th>{_e(m)}</th><td>{_fmt(s)}</td></tr>" for m, s in methods.items())
        parts.append(f"<h3>Methods</h3><table>{rows}</table>")
    parts.append(f"<h3>Versions</h3>{_kv_table(summary.get('versions') or {})}")
    return "".join(parts)


def render_report(summary: Mapping, *, figures: Mapping[str, Sequence[tuple[str, FigureLike]]],
                  tables: Mapping[str, pd.DataFrame],
                  checks: Mapping[str, tuple[Mapping[str, pd.DataFrame],
                                             Sequence[tuple[str, FigureLike]]]] | None = None,
                  verdict_figure: FigureLike | None = None) -> str:
    """The whole report as one HTML page: images inline as data URIs, CSS inline, no scripts.

    The summary's verdict (with `verdict_figure`, its heat map) comes first, then the model, data
    and accuracy cards. `figures` maps a section title to (caption, PNG bytes or Figure) pairs,
    shown in order; `tables` maps a title to a DataFrame, shown before the figures; `checks` maps
    a section title to its tables (by title) and figures, shown after the figures.
    """
    sections = [("Conversion fidelity", _fidelity(summary.get("fidelity"))),
                ("Notes and fallbacks", _notes(summary.get("notes") or [])),
                ("How to read these scores", _howto())]
    sections += [(name, _frame(table)) for name, table in tables.items()]
    sections += [(name, "".join(_image(fig, caption) for caption, fig in items))
                 for name, items in figures.items()]
    sections += [(name, "".join(f"<h3>{_e(title)}</h3>{_frame(table)}"
                                for title, table in section_tables.items())
                  + "".join(_image(fig, caption) for caption, fig in items))
                 for name, (section_tables, items) in (checks or {}).items()]
    sections.append(("Settings, versions and run", _run_details(summary)))
    nav = "".join(f'<a href="#{_anchor(name)}">{_e(name)}</a>' for name, _ in sections)
    body = "".join(_section(name, content) for name, content in sections)
    model_path = (summary.get("model") or {}).get("path", "")
    verdict = _verdict(summary["verdict"], verdict_figure) if summary.get("verdict") else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>xband report — {_e(model_path)}</title><style>{_CSS}</style></head>"
            f"<body><main>"
            f"<h1>xband report</h1><p class=\"lead\">Which input bands the classifier relies on, "
            f"per class, by several attribution methods.</p>{verdict}{_header(summary)}"
            f"<nav>{nav}</nav>"
            f"{body}</main></body></html>")
