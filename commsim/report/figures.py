"""Figures as PNG bytes: bus bandwidth and relative error against message size.

matplotlib is imported only when a figure is drawn, and only its object-oriented API
with the Agg canvas is used (no pyplot, no global backend switch, no display needed).
Sizes go on a log-2 axis labelled like nccl-tests sizes (``1K``, ``64K``, ``1M``).
A :class:`Series` is one line: ``kind`` is ``measured``, ``model`` or ``sim`` and sets
the line style; ``color`` is an index into the palette (the input file's), or None for
the neutral colour of a prediction shared by every file.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from commsim.errors import CommsimError
from commsim.units import format_size

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
_NEUTRAL = {"model": "#333333", "sim": "#9467bd", "measured": "#1f77b4"}
# the model's line is wide and under the simulator's thin dotted one, so both stay
# visible where they coincide (the simulator reproduces the model on contention-free
# topologies)
_STYLE = {"measured": dict(linestyle="-", marker="o", linewidth=2.0, markersize=5, zorder=4),
          "model": dict(linestyle="--", marker=None, linewidth=3.2, alpha=0.55, zorder=2),
          "sim": dict(linestyle=":", marker="x", linewidth=1.6, markersize=7, zorder=3)}


@dataclass
class Series:
    label: str
    sizes: list[int]
    values: list[float | None]  # None: no point at that size
    kind: str = "measured"
    color: int | None = None


def available() -> bool:
    """Whether matplotlib can be imported (figures need it)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float = 9.0, height: float = 4.4):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise CommsimError("figures need matplotlib: pip install 'commsim[plot]'") from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _color(series: Series) -> str:
    if series.color is None:
        return _NEUTRAL.get(series.kind, "#333333")
    return PALETTE[series.color % len(PALETTE)]


def size_ticks(sizes: list[int], most: int = 10) -> list[int]:
    """Powers of two across ``sizes``' range, every 2**k-th so that at most ``most``."""
    lo = math.floor(math.log2(min(sizes)))
    hi = math.ceil(math.log2(max(sizes)))
    step = 1
    while (hi - lo) // step + 1 > most:
        step += 1
    return [2**e for e in range(lo, hi + 1, step)]


def _size_axis(ax, sizes: list[int]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log", base=2)
    ticks = size_ticks(sizes)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([format_size(t) for t in ticks])
    lo, hi = min(sizes), max(sizes)
    ax.set_xlim(lo / 1.3, hi * 1.3)
    ax.set_xlabel("message size (bytes, nccl-tests convention)")


def _plot(ax, series: Series) -> bool:
    pts = [(s, v) for s, v in zip(series.sizes, series.values)
           if v is not None and math.isfinite(v)]
    if not pts:
        return False
    xs, ys = zip(*pts)
    ax.plot(xs, ys, label=series.label, color=_color(series), **_STYLE[series.kind])
    return True


def _legend(ax) -> None:
    """Outside the axes, on the right: it never hides a line."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              borderaxespad=0.0)


def _number(value: float, _pos=None) -> str:
    if value >= 1:
        return f"{value:g}"
    return f"{value:.3g}"


def busbw(title: str, series: list[Series]) -> bytes:
    """Bus bandwidth (GB/s, log axis) against size: one line per series."""
    from matplotlib.ticker import FuncFormatter

    fig = _figure()
    ax = fig.add_subplot()
    sizes = sorted({s for line in series for s in line.sizes})
    drawn = [_plot(ax, line) for line in series]
    values = [v for line in series for v in line.values if v is not None and v > 0]
    if values:
        from matplotlib.ticker import LogLocator, NullLocator

        ax.set_yscale("log")
        # decades when the data spans a few, else 1-2-5 steps; no minor ticks (they cost
        # a third of the drawing time and the grid shows the scale)
        decades = math.log10(max(values) / min(values))
        subs = (1.0,) if decades >= 2 else (1.0, 2.0, 5.0) if decades >= 1 else \
            tuple(float(k) for k in range(1, 10))
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(_number))
    if sizes:
        _size_axis(ax, sizes)
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.set_title(title, loc="left", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    if any(drawn):
        _legend(ax)
    return _png(fig)


def error(title: str, series: list[Series]) -> bytes:
    """Relative error of predictions (%, ``(predicted - measured) / measured``) against
    size, over bands at +-10% and +-25%; a symmetric-log axis when errors pass 250%."""
    fig = _figure()
    ax = fig.add_subplot()
    sizes = sorted({s for line in series for s in line.sizes})
    signed = [v for line in series for v in line.values if v is not None]
    values = [abs(v) for v in signed]
    ax.axhspan(-25, 25, color="#f2c14e", alpha=0.18, linewidth=0, label="within 25%")
    ax.axhspan(-10, 10, color="#2ca02c", alpha=0.18, linewidth=0, label="within 10%")
    ax.axhline(0, color="#555555", linewidth=0.8)
    for line in series:
        _plot(ax, line)
    if max(values, default=0.0) > 250:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("symlog", linthresh=100)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    else:  # the bands always show; the data sets the rest
        ax.set_ylim(min([-30.0] + [1.15 * v for v in signed]),
                    max([30.0] + [1.15 * v for v in signed]))
    if sizes:
        _size_axis(ax, sizes)
    ax.set_ylabel("error of predicted time (%)")
    ax.set_title(title, loc="left", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax)
    return _png(fig)


# --- timelines (commsim ddp) ----------------------------------------------------------

@dataclass
class Span:
    """A bar from ``start`` to ``end`` (seconds) in a lane. ``kind`` picks the colour and
    the legend entry; ``half`` is ``"full"``, ``"upper"`` or ``"lower"`` (two bars side by
    side in one lane, e.g. measured above predicted)."""

    start: float
    end: float
    kind: str
    half: str = "full"


@dataclass
class Lane:
    label: str
    spans: list[Span]


@dataclass
class Curve:
    """A line of ``ys`` against ``xs``; the x range below ``shade_below`` is shaded and
    labelled ``shade_label`` (e.g. the steps that statistics skip)."""

    title: str
    xs: list[float]
    ys: list[float]
    xlabel: str
    ylabel: str
    shade_below: float | None = None
    shade_label: str = ""


TIMELINE_COLORS = {"forward": "#1f77b4", "backward": "#2ca02c", "optimizer": "#9467bd",
                   "communication (measured)": "#d62728",
                   "communication (predicted)": "#555555"}


def timeline(title: str, lanes: list[Lane], curve: Curve | None = None,
             unit: float = 1e-3, unit_name: str = "ms") -> bytes:
    """Lanes of bars against time (top; seconds shown in ``unit``), and optionally a
    curve below it (the loss of a run). Colours by kind (:data:`TIMELINE_COLORS`, grey
    for others); one legend entry per kind, outside the axes."""
    height = 1.2 + 0.42 * len(lanes) + (3.0 if curve else 0.0)
    fig = _figure(10.0, height)
    if curve is not None:
        top, bottom = fig.subplots(2, 1, height_ratios=[max(1.0, 0.42 * len(lanes)), 2.6])
    else:
        top, bottom = fig.add_subplot(), None
    seen: dict[str, object] = {}
    offsets = {"full": (0.1, 0.8), "upper": (0.5, 0.42), "lower": (0.08, 0.42)}
    ends = [s.end for lane in lanes for s in lane.spans]
    least = 0.003 * max(ends, default=0.0) / unit  # the shortest bar still shows
    for i, lane in enumerate(reversed(lanes)):
        for span in lane.spans:
            lo, h = offsets.get(span.half, offsets["full"])
            width = max(span.end - span.start, 0.0) / unit
            width = max(width, least) if width > 0 else 0.0
            bar = top.broken_barh([(span.start / unit, width)], (i + lo, h),
                                  facecolors=TIMELINE_COLORS.get(span.kind, "#999999"),
                                  edgecolor="none")
            seen.setdefault(span.kind, bar)
    top.set_yticks([i + 0.5 for i in range(len(lanes))])
    top.set_yticklabels([lane.label for lane in reversed(lanes)], fontsize=8)
    top.set_ylim(0, len(lanes))
    top.set_xlabel(f"time since the step began ({unit_name})")
    top.set_title(title, loc="left", fontsize=11)
    top.grid(True, axis="x", alpha=0.3)
    if seen:
        order = [k for k in TIMELINE_COLORS if k in seen] + \
            [k for k in seen if k not in TIMELINE_COLORS]
        top.legend([seen[k] for k in order], order, loc="upper left",
                   bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, borderaxespad=0.0)
    if curve is not None:
        bottom.plot(curve.xs, curve.ys, color=PALETTE[0], linewidth=1.8, marker="o",
                    markersize=3)
        if curve.shade_below is not None and curve.xs:
            bottom.axvspan(min(curve.xs) - 0.5, curve.shade_below, color="#bbbbbb",
                           alpha=0.3, linewidth=0, label=curve.shade_label)
            if curve.shade_label:
                _legend(bottom)
        bottom.set_xlabel(curve.xlabel)
        bottom.set_ylabel(curve.ylabel)
        bottom.set_title(curve.title, loc="left", fontsize=11)
        bottom.grid(True, alpha=0.3)
    return _png(fig)


def lines(title: str, xs: list[float], series: list[tuple[str, list[float | None], str]],
          xlabel: str, ylabel: str) -> bytes:
    """Simple lines against ``xs``: ``series`` are ``(label, values, kind)`` with kind
    ``measured``, ``model`` or ``sim`` (the line style of :func:`busbw`)."""
    fig = _figure(8.0, 4.0)
    ax = fig.add_subplot()
    for i, (label, values, kind) in enumerate(series):
        pts = [(x, v) for x, v in zip(xs, values) if v is not None and math.isfinite(v)]
        if pts:
            px, py = zip(*pts)
            ax.plot(px, py, label=label, color=PALETTE[i % len(PALETTE)], **_STYLE[kind])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(list(xs))
    ax.set_title(title, loc="left", fontsize=11)
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return _png(fig)
