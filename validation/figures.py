"""Figures of training runs, drawn and written in one place.

Each figure is built by a function that returns a :class:`matplotlib.figure.Figure` (no pyplot
state, so a test can read its axes before anything is written) and written by :func:`write`: the
given path (PNG unless its extension says otherwise) and, with ``svg=True``, an SVG beside it,
each atomically (:func:`validation.options.save_figure`).

* :func:`training_figure` (``unrelu train --plot``): left, the forward-pass train and validation
  loss against wall-clock seconds, from the initial network at 0 s, log y, with the outer
  iterations on the top axis; right, the violation of each constraint family and the KKT residual
  against outer iterations, log y.
* :func:`comparison_figure` (``unrelu bench train --plot DIR``, ``unrelu cs --plot DIR``): the
  validation loss of several methods against wall-clock seconds on the same axes, references
  (initial network, ridge) as horizontal lines, ablation variants as thin lines, and optionally a
  panel of the final metric (PSNR, accuracy) against seconds that also places methods reporting
  only an end point (pyscnn). :func:`bench_figure` builds it from ``bench train``'s rows and
  histories.

Every title names the problem, the budget and the threads used out of the machine's cores.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from validation import options

__all__ = ["Curve", "Metric", "threads_text", "svg_path", "write", "training_figure", "comparison_figure",
           "bench_figure", "history_curve", "FAMILIES", "ROUNDOFF"]

#: Violation columns of an AL history and their legend labels (the constraints of DESIGN §3).
FAMILIES = {"viol_C1": "C1: Z = W X + b", "viol_C2": "C2: X = D⊙Z", "viol_C3": "C3: D⊙Z = S",
            "viol_C4": "C4: (1−D)⊙Z = −T", "viol_bounds": "bounds: S, T ≥ 0, 0 ≤ D ≤ 1"}

#: Row 0 of an AL history is the forward pass of the initial network, feasible by construction; when
#: its violation is at most this (round-off: about 1e-16 in float64, 1e-7 to 1e-5 in float32 with the
#: products recomputed in another order) it is left out of the violation panel, whose log axis it would
#: otherwise stretch over many decades, and the legend says so.
ROUNDOFF = 1e-4

_SECONDS_LABEL = "wall-clock time (s; loss evaluations not charged)"
_LOSS_LABEL = "loss (fraction of target variance)"


@dataclass
class Curve:
    """One method's series against wall-clock seconds; ``thin`` for ablation variants."""

    label: str
    seconds: Sequence[float]
    values: Sequence[float]
    thin: bool = False


@dataclass
class Metric:
    """The final-metric panel of :func:`comparison_figure`.

    ``points``: ``(label, seconds, value)`` of methods at the end of their run (or where ``xlabel`` says);
    ``references``: label -> value drawn as horizontal lines; ``missing``: legend notes for methods that did
    not run.
    """

    label: str
    points: list = field(default_factory=list)
    references: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)
    xlabel: str = "wall-clock time at the end of the run (s)"


def threads_text(threads: int | None) -> str:
    """``"1 thread of 2 cores"``, or the library default when ``threads`` is ``None``."""
    cores = os.cpu_count() or 1
    if threads is None:
        return f"library-default threads, {cores} cores"
    return f"{threads} thread{'' if threads == 1 else 's'} of {cores} cores"


def svg_path(path: str) -> str:
    """The SVG written beside ``path`` by :func:`write` with ``svg=True``."""
    return os.path.splitext(os.fspath(path))[0] + ".svg"


def write(figure, path: str, *, svg: bool = False, dpi: int = 110) -> list[str]:
    """Write ``figure`` to ``path`` (and to :func:`svg_path` with ``svg``), atomically; return the paths."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    paths = [path]
    options.save_figure(figure, path, dpi=dpi)
    if svg and svg_path(path) != path:
        paths.append(svg_path(path))
        options.save_figure(figure, paths[-1])
    return paths


def _new_figure(widths: Sequence[float], height: float = 4.4):
    """A constrained-layout figure with one row of panels ``widths`` inches wide."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(sum(widths), height), layout="constrained")
    grid = figure.add_gridspec(1, len(widths), width_ratios=widths)
    return figure, [figure.add_subplot(grid[0, index]) for index in range(len(widths))]


def _seconds_axis(axis, ylabel: str, legend_size: int) -> None:
    """A loss axis against wall-clock seconds: log y from 0 s, labels, grid, legend."""
    _log_y(axis)
    axis.set_xlim(left=0.0)
    axis.set_xlabel(_SECONDS_LABEL)
    axis.set_ylabel(ylabel)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=legend_size)


def _log_y(axis) -> None:
    """Log y with plain decimal tick labels (0.04, 0.2) where matplotlib chose to label a tick."""
    from matplotlib.ticker import LogFormatterSciNotation

    class Decimal(LogFormatterSciNotation):
        def __call__(self, x, pos=None):
            return f"{x:.3g}" if super().__call__(x, pos) else ""

    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(Decimal())
    axis.yaxis.set_minor_formatter(Decimal(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _positive(values) -> np.ndarray:
    """Floats with ``None``, NaN and values <= 0 as NaN (gaps on a log axis)."""
    out = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    out[~(out > 0)] = np.nan
    return out


def history_curve(label: str, history: Sequence[dict], key: str = "val_loss", thin: bool = False) -> Curve:
    """The rows of ``history`` (AL or Adam: each has ``seconds``) where ``key`` was recorded."""
    rows = [row for row in history if row.get(key) is not None]
    return Curve(label, [row["seconds"] for row in rows], [row[key] for row in rows], thin)


# ====================================================================== unrelu train --plot
def training_figure(history: Sequence[dict], *, problem: str, budget: str, threads: int | None,
                    mode: str = "restarted"):
    """Two panels of one AL run (rows of :data:`solvers.methods.al_trainer.HISTORY_COLUMNS`).

    Left: forward-pass train and validation loss against seconds, row 0 (the initial network) at
    0 s, log y, outer iterations on the top axis. Right: violation per constraint family and KKT
    residual against outer iterations, log y; rows without a KKT residual (the restarted mode
    computes it every few iterations) are skipped, and row 0 is left out of the violation series
    when it is feasible up to :data:`ROUNDOFF`, as the legend says.
    """
    figure, (left, right) = _new_figure((5.5, 5.5), height=5.2)
    seconds = np.array([row["seconds"] for row in history], dtype=float)
    iterations = np.array([row["iteration"] for row in history], dtype=float)
    for key, label in (("train_loss", "train loss (forward pass)"), ("val_loss", "validation loss (forward pass)")):
        if any(row.get(key) is not None for row in history):
            curve = history_curve(label, history, key)
            left.plot(curve.seconds, _positive(curve.values), label=label, marker="." if len(history) < 30 else None)
    _seconds_axis(left, _LOSS_LABEL, legend_size=8)
    if len(history) > 1 and np.all(np.diff(seconds) > 0):
        top = left.secondary_xaxis("top", functions=(lambda s: np.interp(s, seconds, iterations),
                                                     lambda i: np.interp(i, iterations, seconds)))
        top.set_xlabel("outer iteration")

    first = history[0]
    drop_first = first["iteration"] == 0 and first["violation"] is not None and first["violation"] <= ROUNDOFF
    start = 1 if drop_first else 0
    zero = []
    for key, label in FAMILIES.items():
        values = _positive([row.get(key) for row in history[start:]])
        if np.all(np.isnan(values)):
            zero.append(label.split(":")[0])
            continue
        sparse = bool(np.any(np.isnan(values)))  # isolated points need markers to be seen
        right.plot(iterations[start:], values, label=label, linewidth=1.2, marker="." if sparse else None)
    kkt_rows = [row for row in history if row.get("kkt") is not None]
    label = "KKT residual"
    if len(kkt_rows) < len(history):
        label += f" (computed on {len(kkt_rows)} of {len(history)} rows)"
    right.plot([row["iteration"] for row in kkt_rows], _positive([row["kkt"] for row in kkt_rows]), label=label,
               color="black", marker="o", markersize=3, linewidth=1.0)
    if zero and len(history) > start:
        why = "\n(the restarted mode ends every iteration at a forward pass)" if mode == "restarted" else ""
        right.plot([], [], " ", label=f"violation 0 at every drawn iteration: {', '.join(zero)}{why}")
    if drop_first:
        value = f"{first['violation']:.0e}" if first["violation"] else "0"
        right.plot([], [], " ", label=f"iteration 0 left out: the forward pass of the initial network,\n"
                                      f"feasible by construction (violation {value}, round-off)")
    _log_y(right)
    right.set_xlabel("outer iteration")
    right.set_ylabel("max |residual| (standardised data)")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    figure.suptitle(f"{problem}: AL training ({mode} mode), {budget}, {threads_text(threads)}", fontsize=10)
    return figure


# ====================================================================== bench train --plot, cs --plot
def comparison_figure(curves: Sequence[Curve], *, problem: str, budget: float, threads: int | None,
                      references: dict | None = None, metric: Metric | None = None, detail: str = "",
                      ylabel: str = "validation " + _LOSS_LABEL):
    """Validation loss of each curve against seconds, log y; ``references`` (label -> loss) as
    horizontal lines; with ``metric`` a second panel of the final metric against seconds."""
    figure, axes = _new_figure((7.0, 4.5) if metric is not None else (7.0,))
    axis = axes[0]
    colours = {}
    for curve in curves:
        (line,) = axis.plot(curve.seconds, _positive(curve.values), label=curve.label,
                            linewidth=0.8 if curve.thin else 2.0, alpha=0.8 if curve.thin else 1.0)
        colours[curve.label] = line.get_color()
    for (label, value), style in zip((references or {}).items(), ("--", ":", "-.")):
        if value is not None and math.isfinite(value) and value > 0:
            axis.axhline(value, color="grey", linestyle=style, linewidth=1.2, label=label)
    _seconds_axis(axis, ylabel, legend_size=7)
    if metric is not None:
        axis = axes[1]
        import matplotlib

        palette = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        fresh = iter([colour for colour in palette if colour not in colours.values()] + palette)
        for label, seconds, value in metric.points:  # a method keeps its colour from the loss panel
            axis.plot([seconds], [value], marker="o", linestyle="none", markersize=7, label=label,
                      color=colours[label] if label in colours else next(fresh))
        for (label, value), style in zip(metric.references.items(), ("--", ":", "-.")):
            if value is not None and math.isfinite(value):
                axis.axhline(value, color="grey", linestyle=style, linewidth=1.2, label=label)
        for note in metric.missing:
            axis.plot([], [], " ", label=note)
        right = max([seconds for _, seconds, _ in metric.points] + [budget])
        axis.set_xlim(0.0, 1.1 * right)
        axis.set_xlabel(metric.xlabel)
        axis.set_ylabel(metric.label)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"{problem}: budget {budget:g} s per run, {threads_text(threads)}"
                    + (f", {detail}" if detail else ""), fontsize=10)
    return figure


#: ``bench train`` problems with a final metric: problem -> (row key, axis label, scale).
BENCH_METRICS = {"mnist-cs": ("val_psnr", "validation PSNR (dB, mean over images)", 1.0),
                 "digits": ("val_acc", "validation accuracy (%)", 100.0)}


def _is_reference(method: str) -> bool:
    return method.startswith("init") or method.startswith("ridge")


def bench_figure(problem: str, rows: Sequence[dict], traces: dict, *, budget: float, threads: int | None,
                 detail: str = ""):
    """The ``bench train --plot`` figure of one problem.

    ``rows`` are the problem's table rows (``method``, ``seconds``, losses, ``val_psnr``/``val_acc``);
    ``traces`` is what ``bench_one`` / ``ablation_one`` keep besides them: ``histories`` (label ->
    history with ``seconds`` and ``val_loss``; ``thin`` lists the labels drawn thin) and
    ``references`` (label -> validation loss of methods without a history, such as ridge).
    """
    thin = set(traces.get("thin", ()))
    curves = [history_curve(label, history, thin=label in thin) for label, history in traces["histories"].items()]
    references = {}
    for row in rows:
        if _is_reference(row.get("method", "")) and row.get("val_loss") is not None:
            references[row["method"]] = row["val_loss"]
    references.update(traces.get("references", {}))
    metric = None
    if problem in BENCH_METRICS and any(BENCH_METRICS[problem][0] in row for row in rows):
        key, label, scale = BENCH_METRICS[problem]
        metric = Metric(label)
        for row in rows:
            value = row.get(key)
            name = row.get("method") or row.get("variant")
            if value is None or not math.isfinite(value):
                if "note" in row and not _is_reference(name):
                    metric.missing.append(f"{name}: did not run ({row['note'].split('(')[0].strip()})")
                continue
            if _is_reference(name):
                metric.references[name] = scale * value
            elif math.isfinite(row.get("seconds", math.nan)):
                metric.points.append((name, row["seconds"], scale * value))
    return comparison_figure(curves, problem=problem, budget=budget, threads=threads, references=references,
                             metric=metric, detail=detail)
