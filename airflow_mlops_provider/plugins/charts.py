"""Server-side SVG charts: a sweep's metric against one hyper-parameter, as a scatter plot.

The pages carry no script, so a chart is plain SVG, inline in the page. Every piece of text in
it (axis labels, category names, tooltips) comes from a trial's parameters or metrics and is
escaped here with :func:`markupsafe.escape` before it is joined; the result is the one kind of
``Markup`` the plugin makes. Colours and sizes are SVG presentation attributes, which the app's
Content-Security-Policy (``style-src 'self'``) allows.

- numeric axes are linear, or logarithmic when asked or when the (positive) values span at least
  two decades;
- a parameter whose values are not all numbers (text, booleans, None) gets one band per value;
- the best trial is drawn larger, in the accent colour; each point's ``<title>`` is its tooltip.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from markupsafe import Markup, escape

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["axis_scale", "is_number", "nice_ticks", "scatter_svg"]

WIDTH, HEIGHT = 340, 230
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 12, 42
POINT, BEST = "#017cee", "#d9480f"
AXIS, GRID, TEXT = "#5a6478", "#e3e6eb", "#5a6478"
#: Least ratio max/min of positive values that makes an axis logarithmic by itself.
LOG_SPAN = 100.0


def is_number(value: Any) -> bool:
    """Return whether ``value`` is a finite int or float (booleans are not numbers here)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def axis_scale(values: Sequence[Any], log: bool | None = None) -> str:
    """
    Return ``"log"``, ``"linear"`` or ``"band"`` for an axis showing ``values``.

    :param values: The values on the axis.
    :param log: True when the search space is logarithmic, False to refuse a log axis, None to
        decide from the values (log when all are positive and span >= two decades).
    """
    if not values or not all(is_number(v) for v in values):
        return "band"
    positive = all(v > 0 for v in values)
    if log is not None:
        return "log" if log and positive else "linear"
    return "log" if positive and max(values) / min(values) >= LOG_SPAN else "linear"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Return round tick values (1, 2, 2.5 or 5 times a power of ten apart) from at or below ``low`` to at or above ``high``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"ticks need finite bounds, got low={low!r}, high={high!r}")
    if high < low:
        low, high = high, low
    if high == low:
        return [low]
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    ticks = [round(k * step, 12) for k in range(first, last + 1)]
    return ticks


def _log_ticks(low: float, high: float) -> list[float]:
    start, stop = math.floor(math.log10(low) + 1e-9), math.ceil(math.log10(high) - 1e-9)
    decades = [10.0**k for k in range(start, stop + 1) if low * (1 - 1e-9) <= 10.0**k <= high * (1 + 1e-9)]
    return decades or [low, high]


def _label(value: Any) -> str:
    if is_number(value):
        return f"{value:.4g}"
    return "None" if value is None else str(value)


class _Axis:
    """Maps values to pixels along ``start..end`` (pixels may run downwards, for y)."""

    def __init__(self, values: Sequence[Any], start: float, end: float, scale: str) -> None:
        self.start, self.end, self.scale = start, end, scale
        if scale == "band":
            self.categories: list[str] = []
            for value in values:
                if _label(value) not in self.categories:
                    self.categories.append(_label(value))
            self.categories.sort(key=lambda text: (not _numeric_text(text), _sort_key(text)))
            self.ticks: list[Any] = list(self.categories)
            return
        numbers = [float(v) for v in values]
        low, high = min(numbers), max(numbers)
        if scale == "log":
            self.low, self.high = math.log10(low), math.log10(high)
            self.ticks = _log_ticks(low, high)
        else:
            self.ticks = nice_ticks(low, high)
            low, high = min([low, *self.ticks]), max([high, *self.ticks])
            self.low, self.high = low, high
        if self.high == self.low:
            self.low, self.high = self.low - 1, self.high + 1
        pad = (self.high - self.low) * 0.04
        self.low, self.high = self.low - pad, self.high + pad

    def band_width(self) -> float:
        return abs(self.end - self.start) / max(1, len(self.categories))

    def position(self, value: Any) -> float:
        if self.scale == "band":
            index = self.categories.index(_label(value))
            step = (self.end - self.start) / max(1, len(self.categories))
            return self.start + step * (index + 0.5)
        number = math.log10(float(value)) if self.scale == "log" else float(value)
        return self.start + (number - self.low) / (self.high - self.low) * (self.end - self.start)


def _numeric_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sort_key(text: str) -> Any:
    return float(text) if _numeric_text(text) else text


def _text(x: float, y: float, body: Any, anchor: str = "middle", **attrs: Any) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="11" fill="{TEXT}"{extra}>'
        f"{escape(body)}</text>"
    )


def scatter_svg(
    points: Sequence[Mapping[str, Any]],
    *,
    x_label: str,
    y_label: str,
    log_x: bool | None = None,
    log_y: bool | None = False,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup:
    """
    Return an inline ``<svg>`` scatter plot of ``points`` (every text escaped).

    :param points: ``{"x", "y", "label", "best"}`` each: the parameter's value, the metric's
        value (a number), the tooltip's first line (the trial id) and whether it is the best.
    :param x_label: The hyper-parameter's name.
    :param y_label: The metric's name.
    :param log_x: A log x axis: True (the space is logarithmic), False, or None (decide from the values).
    :param log_y: The same for the metric's axis (default linear).
    :param width: The SVG's width in pixels.
    :param height: The SVG's height in pixels.
    :raises ValueError: when a point's ``y`` is not a finite number.
    """
    for point in points:
        if not is_number(point.get("y")):
            raise ValueError(
                f"a chart point needs a numeric y, got {point.get('y')!r} for {point.get('label')!r}"
            )
    title = f"{y_label} vs {x_label}"
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="scatter" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    )
    if not points:
        return Markup(head + _text(width / 2, height / 2, "no successful trial to plot") + "</svg>")
    xs, ys = [p.get("x") for p in points], [p["y"] for p in points]
    x_scale = axis_scale(xs, log_x)
    x_axis = _Axis(xs, LEFT, width - RIGHT, x_scale)
    y_axis = _Axis(ys, height - BOTTOM, TOP, axis_scale(ys, log_y) if log_y is not False else "linear")
    parts = [head]
    bottom, right = height - BOTTOM, width - RIGHT
    for tick in y_axis.ticks:
        y = y_axis.position(tick)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(_text(LEFT - 4, y + 3.5, _label(tick), anchor="end"))
    labels = x_axis.ticks
    every = max(1, math.ceil(len(labels) / 8))
    for index, tick in enumerate(labels):
        x = x_axis.position(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="{AXIS}"/>')
        if index % every == 0:
            text = _label(tick)
            parts.append(_text(x, bottom + 15, text if len(text) <= 14 else text[:13] + "…"))
    parts.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{AXIS}"/>')
    parts.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="{AXIS}"/>')
    scale_note = " (log)" if x_scale == "log" else ""
    parts.append(_text((LEFT + right) / 2, height - 6, f"{x_label}{scale_note}", font_weight="600"))
    parts.append(
        _text(
            12,
            (TOP + bottom) / 2,
            y_label,
            font_weight="600",
            transform=f"rotate(-90 12 {(TOP + bottom) / 2:.1f})",
        )
    )
    band = x_axis.band_width() if x_scale == "band" else 0.0
    best_parts: list[str] = []
    for index, point in enumerate(points):
        x = x_axis.position(point.get("x"))
        if band:  # spread the points of one band so they do not hide each other
            x += ((index * 7) % 11 - 5) / 5 * min(band * 0.3, 18)
        y = y_axis.position(point["y"])
        tip = f"{point.get('label', '')}\n{x_label} = {_label(point.get('x'))}\n{y_label} = {_label(point['y'])}"
        best = bool(point.get("best"))
        if best:
            tip += "\nbest trial"
            look = f'class="point best" r="6" fill="{BEST}" stroke="#1a202c" stroke-width="1.5"'
        else:
            look = f'class="point" r="3.5" fill="{POINT}" fill-opacity="0.7"'
        circle = (
            f'<circle {look} cx="{x:.1f}" cy="{y:.1f}" data-trial="{escape(point.get("label", ""))}">'
            f"<title>{escape(tip)}</title></circle>"
        )
        (best_parts if best else parts).append(circle)
    parts.extend(best_parts)  # drawn last: on top
    parts.append("</svg>")
    return Markup("".join(parts))
