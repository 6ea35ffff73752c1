"""Plotly figures for the pages (no streamlit; unit-tested). Numeric arrays go to the browser as typed arrays,
and histograms are binned here, so a 60k-sample run sends counts rather than raw values."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from selector.table import SCORE_COLUMNS
from selector.ui import density
from selector.ui.views import Histogram, class_codes

CATEGORICAL = ("label", "flagged", "selected", "noise_injected", "ood", "missing_class", "duplicate", "leak")
_FROM = {"duplicate": "duplicate_of", "leak": "leak_of"}     # colourings read from another column
# markers sent for hover and click; the image holds every point. A lasso's event carries every marker inside
# it: a 36,600-row lasso at 60k rows took 3.3 s to its gallery with 60,000 markers, 1.7 s with 20,000
MAX_MAP_POINTS = 20_000
MAX_LEGEND = 20
_HOVER = ("<b>%{text}</b><br>row %{customdata[0]}<br>noise score %{customdata[1]:.3f}"
          "<br>alignment %{customdata[2]:.3f}<br>diversity %{customdata[3]:.3f}<extra>%{fullData.name}</extra>")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")


def colour_options(table: pd.DataFrame) -> list[str]:
    """What the map can be coloured by: label, flags, the selection, and every score column."""
    opts = [c for c in CATEGORICAL if _FROM.get(c, c) in table or c == "selected"]
    return opts + [c for c in SCORE_COLUMNS if c in table]


def _label_names(labels: pd.Series) -> list[str]:
    if isinstance(labels.dtype, pd.CategoricalDtype):
        return [str(c) for c in labels.cat.categories]
    return [str(c) for c in pd.unique(labels.astype(str))]


@dataclass(frozen=True)
class MapImage:
    """The density image of every point for one colouring, and its key: legend entries or a score range."""
    source: str                                   # PNG data URI
    extent: density.Extent
    legend: tuple = ()                            # (name, colour) pairs
    scale: Optional[tuple[str, float, float]] = None   # (score column, low, high) for a colour bar


def map_image(table: pd.DataFrame, selected: np.ndarray, colour: str, *, classes: Sequence[str] = ()) -> MapImage:
    """colour: "label" (mean class colour per pixel, in `classes` order), a bool column ("flagged",
    "noise_injected", "ood"), "missing_class" / "duplicate" / "leak" (in a missing-class group, a near-duplicate
    group, a leak across splits), "selected" (the `selected` mask) or a numeric score column (its mean per pixel)."""
    xy = table[["map_x", "map_y"]].to_numpy(dtype=np.float32)
    extent = density.Extent.of(xy)
    if colour == "label":
        names = [str(c) for c in classes] or _label_names(table["label"])
        codes = class_codes(table["label"], names)
        rgb = density.hex_rgb(PALETTE)[np.maximum(codes, 0) % len(PALETTE)]
        return MapImage(density.png_data_uri(density.density_rgba(xy, extent, rgb=rgb)), extent,
                        tuple((name, PALETTE[i % len(PALETTE)]) for i, name in enumerate(names[:MAX_LEGEND])))
    if colour in CATEGORICAL:
        if colour == "selected":
            values = np.asarray(selected, dtype=bool)
        elif colour == "duplicate":                  # a copy, or the kept image of a group
            dup = table["duplicate_of"].to_numpy()
            values = dup >= 0
            values[dup[dup >= 0]] = True
        elif colour in ("missing_class", "leak"):
            values = table[_FROM.get(colour, colour)].to_numpy() >= 0
        else:
            values = table[colour].to_numpy(dtype=bool)
        names = {"selected": ("dropped", "selected"), "flagged": ("not flagged", "flagged"),
                 "noise_injected": ("label as given", "label flipped on purpose"),
                 "ood": ("in distribution", "matches no class"),
                 "missing_class": ("in a known class", "a class missing from the label set?"),
                 "duplicate": ("no near-duplicate", "in a near-duplicate group"),
                 "leak": ("no leak", "near-duplicate in another split")}[colour]
        colours = ("#b0b8c4", "#d62728" if colour != "selected" else "#2b6cb0")
        rgb = density.hex_rgb(colours)[values.astype(np.int64)]
        return MapImage(density.png_data_uri(density.density_rgba(xy, extent, rgb=rgb)), extent,
                        tuple(zip(names, colours)))
    values = table[colour].to_numpy(dtype=np.float32)
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    image = density.density_rgba(xy, extent, values=(values - lo) / max(hi - lo, 1e-12))
    return MapImage(density.png_data_uri(image), extent, scale=(colour, lo, hi))


def map_figure(table: pd.DataFrame, image: MapImage, rows: np.ndarray, *, revision: str = "") -> go.Figure:
    """The density image of every point under one invisible WebGL trace of `rows`, which carries the hover
    text and each row's table index as customdata[0] (click, box and lasso). Picked points stay unmarked, so
    the image's colours stay readable (dense picks would stack into a dark blot); the drawn outline shows them.
    A drag pans: in Plotly's lasso or box mode a click clears the selection instead of picking the point under
    it, so those tools are one toolbar click away."""
    rows = np.asarray(rows, dtype=np.int64)
    fig = go.Figure()
    if image.scale:
        name, lo, hi = image.scale
        fig.add_trace(go.Scattergl(x=[None], y=[None], mode="markers", name=name, showlegend=False,
                                   hoverinfo="skip", marker=dict(colorscale=list(density.VIRIDIS), cmin=lo, cmax=hi,
                                                                 color=[lo], showscale=True,
                                                                 colorbar=dict(title=name))))
    for name, c in image.legend:                  # legend entries only: the points are in the image
        fig.add_trace(go.Scattergl(x=[None], y=[None], mode="markers", name=name, hoverinfo="skip",
                                   marker=dict(size=9, color=c)))
    xy = table[["map_x", "map_y"]].to_numpy(dtype=np.float32)[rows]
    custom = np.column_stack([rows.astype(np.float32), table["noise_score"].to_numpy(np.float32)[rows],
                              table["alignment"].to_numpy(np.float32)[rows],
                              table["diversity"].to_numpy(np.float32)[rows]])
    fig.add_trace(go.Scattergl(
        x=xy[:, 0], y=xy[:, 1], mode="markers", name="samples", showlegend=False,
        text=table["label"].iloc[rows].astype(str).to_numpy(), customdata=custom,
        hovertemplate=_HOVER.replace("%{fullData.name}", ""),
        marker=dict(size=5, color="#111111", opacity=0.0),
        selected=dict(marker=dict(opacity=0.0)), unselected=dict(marker=dict(opacity=0.0))))
    e = image.extent
    fig.add_layout_image(source=image.source, xref="x", yref="y", x=e.x0, y=e.y1, sizex=e.x1 - e.x0,
                         sizey=e.y1 - e.y0, sizing="stretch", layer="below")
    axis = dict(showticklabels=False, title=None, showgrid=False, zeroline=False)
    fig.update_layout(height=620, margin=dict(l=10, r=10, t=30, b=10), uirevision=revision,
                      plot_bgcolor="white", legend=dict(itemsizing="constant"), dragmode="pan",
                      xaxis=dict(axis, range=[e.x0, e.x1]), yaxis=dict(axis, range=[e.y0, e.y1]))
    return fig


def histogram_figure(h: Histogram, *, title: str, lines: Sequence[tuple[float, str, str]] = (),
                     log: bool = False) -> go.Figure:
    """Stacked bars of selected / dropped counts per bin (trace 0 / 1), with labelled vertical lines (value,
    text, colour); log: a logarithmic count axis, so a spike does not flatten the rest."""
    width = float(h.edges[1] - h.edges[0])
    fig = go.Figure([
        go.Bar(x=h.centers, y=h.selected, width=width, name="selected", marker_color="#2b6cb0"),
        go.Bar(x=h.centers, y=h.dropped, width=width, name="dropped", marker_color="#b0b8c4"),
    ])
    for value, text, colour in lines:
        fig.add_vline(x=value, line_dash="dash", line_color=colour, annotation_text=text,
                      annotation_position="top")
    fig.update_layout(barmode="stack", bargap=0, height=320, title=title, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.15), yaxis=dict(type="log" if log else "linear"))
    return fig


def class_box_figure(table: pd.DataFrame, column: str, *, classes: Sequence[str] = (),
                     line: Optional[tuple[float, str, str]] = None, cuts: Optional[Sequence[float]] = None,
                     cut_name: str = "selection cut", codes: Optional[np.ndarray] = None) -> go.Figure:
    """One box per class of a score, its quartiles and 1.5 IQR whiskers computed here over every row (one
    trace of five numbers a class: the same few KB at 1.28M rows as at 60k); cuts: one value per class drawn as
    a marker (e.g. each class's selection cut under per-class quotas). codes: each row's class index, if known."""
    names = [str(c) for c in classes] or _label_names(table["label"])
    codes = class_codes(table["label"], names) if codes is None else np.asarray(codes, np.int64)
    values = table[column].to_numpy(dtype=np.float64)
    ok = (codes >= 0) & np.isfinite(values)
    order = np.lexsort((values[ok], codes[ok]))                    # by class, then by value
    v, c = values[ok][order], codes[ok][order]
    bounds = np.searchsorted(c, np.arange(len(names) + 1))
    q = {k: np.full(len(names), np.nan) for k in ("q1", "median", "q3", "lowerfence", "upperfence")}
    for i in np.flatnonzero(np.diff(bounds) > 0):
        seg = v[bounds[i]:bounds[i + 1]]
        q1, med, q3 = np.quantile(seg, [0.25, 0.5, 0.75])
        iqr = q3 - q1
        q["q1"][i], q["median"][i], q["q3"][i] = q1, med, q3
        q["lowerfence"][i] = seg[np.searchsorted(seg, q1 - 1.5 * iqr)]             # the lowest value in the fence
        q["upperfence"][i] = seg[np.searchsorted(seg, q3 + 1.5 * iqr, side="right") - 1]
    fig = go.Figure(go.Box(x=names, name=column, showlegend=False, **{k: list(a) for k, a in q.items()}))
    if cuts is not None:
        fig.add_trace(go.Scatter(x=names, y=list(cuts), mode="markers", name=cut_name,
                                 marker=dict(symbol="line-ew-open", size=28, color="#2b6cb0", line=dict(width=3))))
    if line is not None:
        value, text, colour = line
        fig.add_hline(y=value, line_dash="dash", line_color=colour, annotation_text=text)
    fig.update_layout(height=360, title=f"{column} per class", margin=dict(l=10, r=10, t=50, b=10))
    return fig
