"""plugins/charts.py: the sweep's server-side SVG scatter plots (scales, ticks, escaping, the best point)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from airflow_mlops_provider.plugins.charts import axis_scale, nice_ticks, scatter_svg

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(str(svg))  # well-formed XML, or this raises


def _points(root: ET.Element) -> list[ET.Element]:
    return root.findall(f"{SVG}circle")


@pytest.mark.parametrize(
    ("values", "log", "scale"),
    [
        ([0.001, 0.01, 0.1], None, "log"),  # three decades: log by itself
        ([1, 50], None, "linear"),  # under two decades
        ([1, 100], None, "log"),
        ([-1, 100], None, "linear"),  # not all positive
        ([1, 2], True, "log"),  # the space is log
        ([0.001, 0.1], False, "linear"),
        ([0, 10], True, "linear"),  # log refused for a zero
        (["adam", "sgd"], None, "band"),
        ([True, False], None, "band"),  # booleans are categories, not 0/1
        ([1, "a"], None, "band"),
        ([1, None], None, "band"),
        ([], None, "band"),
    ],
)
def test_axis_scale(values, log, scale):
    assert axis_scale(values, log) == scale


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.13, 0.97) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(-3, 12) == [-5, 0, 5, 10, 15]
    assert nice_ticks(12, -3) == [-5, 0, 5, 10, 15]
    assert nice_ticks(2.5, 2.5) == [2.5]
    with pytest.raises(ValueError, match="finite bounds, got low=nan"):
        nice_ticks(float("nan"), 1)


def test_numeric_scatter_places_points_and_highlights_the_best():
    points = [
        {"x": 0.001, "y": 0.3, "label": "t-a", "best": False},
        {"x": 0.01, "y": 0.1, "label": "t-b", "best": True},
        {"x": 0.1, "y": 0.5, "label": "t-c", "best": False},
    ]
    svg = scatter_svg(points, x_label="lr", y_label="loss")
    assert isinstance(svg, Markup)
    root = _parse(svg)
    assert root.get("aria-label") == "loss vs lr"
    circles = _points(root)
    assert len(circles) == 3
    # the best is drawn last (on top), larger, and says so in its tooltip
    best = circles[-1]
    assert best.get("class") == "point best"
    assert best.get("data-trial") == "t-b"
    assert best.get("r") == "6"
    assert best.find(f"{SVG}title").text == "t-b\nlr = 0.01\nloss = 0.1\nbest trial"
    cx = {c.get("data-trial"): float(c.get("cx")) for c in circles}
    cy = {c.get("data-trial"): float(c.get("cy")) for c in circles}
    # log x: evenly spaced decades; y grows upwards (smaller pixel y for a larger loss)
    assert cx["t-b"] - cx["t-a"] == pytest.approx(cx["t-c"] - cx["t-b"], abs=0.2)
    assert cy["t-c"] < cy["t-a"] < cy["t-b"]
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"0.001", "0.01", "0.1", "lr (log)", "loss"} <= set(texts)


def test_categorical_axis_has_one_band_per_value_sorted():
    points = [
        {"x": v, "y": float(i), "label": f"t{i}"} for i, v in enumerate(["sgd", "adam", "sgd", "adam", 3, 10])
    ]
    root = _parse(scatter_svg(points, x_label="opt", y_label="m"))
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert {"3", "10", "adam", "sgd"} <= set(labels)
    xs = {}
    for c in _points(root):
        xs.setdefault(c.find(f"{SVG}title").text.split("\n")[1], []).append(float(c.get("cx")))
    # numbers first (numerically), then text; points of a band stay inside it
    centers = {k: sum(v) / len(v) for k, v in xs.items()}
    assert centers["opt = 3"] < centers["opt = 10"] < centers["opt = adam"] < centers["opt = sgd"]


def test_every_text_is_escaped():
    evil = '"><svg onload=alert(1)>'
    points = [
        {"x": evil, "y": 1.0, "label": "<script>alert(1)</script>", "best": True},
        {"x": "b&c", "y": 2.0, "label": "x"},
    ]
    svg = str(scatter_svg(points, x_label="<img src=x onerror=alert(1)>", y_label='m"'))
    assert "<script" not in svg
    assert "<img" not in svg
    assert "onload=alert(1)>" not in svg.replace("&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert "&#34;&gt;&lt;svg onload=alert(1)&gt;" in svg
    root = _parse(svg)  # still well-formed: no attribute was broken out of
    assert [c.get("data-trial") for c in _points(root)] == ["x", "<script>alert(1)</script>"]
    assert root.find(f"{SVG}title").text == 'm" vs <img src=x onerror=alert(1)>'
    # only the SVG's own elements
    assert set(re.findall(r"<(\w+)", svg)) == {"svg", "title", "line", "text", "circle"}


def test_empty_and_bad_points():
    root = _parse(scatter_svg([], x_label="x", y_label="y"))
    assert [t.text for t in root.iter(f"{SVG}text")] == ["no successful trial to plot"]
    with pytest.raises(ValueError, match=r"needs a numeric y, got 'oops' for 't1'"):
        scatter_svg([{"x": 1, "y": "oops", "label": "t1"}], x_label="x", y_label="y")


def test_five_hundred_points_make_one_svg_of_reasonable_size():
    points = [
        {"x": 10 ** (i / 100), "y": (i % 37) / 7, "label": f"t{i}", "best": i == 250} for i in range(500)
    ]
    svg = str(scatter_svg(points, x_label="n", y_label="loss"))
    root = _parse(svg)
    assert len(_points(root)) == 500
    assert len(root.findall(f"{SVG}circle[@class='point best']")) == 1
    assert len(svg) < 200_000
