"""Plotly figures for the pages (no streamlit; unit-tested). Numeric arrays go to the browser as typed arrays,
and histograms are binned here, so a 60k-sample run sends counts rather than raw values."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from selector.table import SCORE_COLUMNS
from selector.ui.views import Histogram

CATEGORICAL = ("label", "flagged", "selected", "noise_injected", "ood")
MAX_MAP_POINTS = 60_000
_HOVER = ("<b>%{text}</b><br>row %{customdata[0]}<br>noise score %{customdata[1]:.3f}"
          "<br>alignment %{customdata[2]:.3f}<br>diversity %{customdata[3]:.3f}<extra>%{fullData.name}</extra>")
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")


def colour_options(table: pd.DataFrame) -> list[str]:
    """What the map can be coloured by: label, flags, the selection, and every score column."""
    opts = [c for c in CATEGORICAL if c in table or c == "selected"]
    return opts + [c for c in SCORE_COLUMNS if c in table]


def map_figure(table: pd.DataFrame, selected: np.ndarray, colour: str, rows: np.ndarray,
               *, classes: Sequence[str] = (), revision: str = "") -> go.Figure:
    """WebGL scatter of map_x/map_y for `rows`; every point carries its table row as customdata[0].

    colour: "label" (one trace per class, in `classes` order), a bool column ("flagged", "noise_injected",
    "ood"), "selected" (the `selected` mask) or any numeric score column (continuous colour scale).
    """
    rows = np.asarray(rows, dtype=np.int64)
    xy = table[["map_x", "map_y"]].to_numpy(dtype=np.float32)[rows]
    custom = np.column_stack([rows.astype(np.float32), table["noise_score"].to_numpy(np.float32)[rows],
                              table["alignment"].to_numpy(np.float32)[rows],
                              table["diversity"].to_numpy(np.float32)[rows]])
    labels = table["label"].astype(str).to_numpy()[rows]
    fig = go.Figure()

    def add(sel, name, colour_value, size=4):
        # coloured by label, the trace name is the label: no per-point text to send (saves ~1 MB at 60k)
        text = None if colour == "label" else labels[sel]
        hover = _HOVER.replace("%{text}", "%{fullData.name}") if text is None else _HOVER
        fig.add_trace(go.Scattergl(
            x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=name, text=text, customdata=custom[sel],
            hovertemplate=hover, marker=dict(size=size, color=colour_value, opacity=0.75)))

    if colour == "label":
        for i, name in enumerate(classes or pd.unique(table["label"].astype(str))):
            add(labels == name, name, _PALETTE[i % len(_PALETTE)])
    elif colour in CATEGORICAL:
        values = (np.asarray(selected, dtype=bool) if colour == "selected"
                  else table[colour].to_numpy(dtype=bool))[rows]
        names = {"selected": ("dropped", "selected"), "flagged": ("not flagged", "flagged"),
                 "noise_injected": ("label as given", "label flipped on purpose"),
                 "ood": ("in distribution", "matches no class")}[colour]
        add(~values, names[0], "#b0b8c4")
        add(values, names[1], "#d62728" if colour != "selected" else "#2b6cb0", size=5)
    else:
        values = table[colour].to_numpy(dtype=np.float32)[rows]
        fig.add_trace(go.Scattergl(
            x=xy[:, 0], y=xy[:, 1], mode="markers", name=colour, text=labels, customdata=custom,
            hovertemplate=_HOVER, marker=dict(size=4, color=values, colorscale="Viridis", opacity=0.8,
                                              showscale=True, colorbar=dict(title=colour))))
    fig.update_layout(height=620, margin=dict(l=10, r=10, t=30, b=10), uirevision=revision,
                      legend=dict(itemsizing="constant"), xaxis=dict(showticklabels=False, title=None),
                      yaxis=dict(showticklabels=False, title=None))
    return fig


def histogram_figure(h: Histogram, *, title: str, lines: Sequence[tuple[float, str, str]] = ()) -> go.Figure:
    """Stacked bars of selected / dropped counts per bin, with labelled vertical lines (value, text, colour)."""
    width = float(h.edges[1] - h.edges[0])
    fig = go.Figure([
        go.Bar(x=h.centers, y=h.selected, width=width, name="selected", marker_color="#2b6cb0"),
        go.Bar(x=h.centers, y=h.dropped, width=width, name="dropped", marker_color="#b0b8c4"),
    ])
    for value, text, colour in lines:
        fig.add_vline(x=value, line_dash="dash", line_color=colour, annotation_text=text,
                      annotation_position="top")
    fig.update_layout(barmode="stack", bargap=0, height=320, title=title, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.15))
    return fig


def class_box_figure(table: pd.DataFrame, column: str, *, classes: Sequence[str] = (),
                     line: Optional[tuple[float, str, str]] = None, max_points_per_class: int = 2000,
                     seed: int = 0) -> go.Figure:
    """One box per class of a score (a seeded sample of at most max_points_per_class values per class)."""
    rng = np.random.default_rng(seed)
    fig = go.Figure()
    labels = table["label"].astype(str).to_numpy()
    values = table[column].to_numpy(dtype=np.float32)
    for name in classes or pd.unique(labels):
        idx = np.flatnonzero(labels == name)
        if len(idx) > max_points_per_class:
            idx = rng.choice(idx, size=max_points_per_class, replace=False)
        fig.add_trace(go.Box(y=values[idx], name=name, boxpoints=False, showlegend=False))
    if line is not None:
        value, text, colour = line
        fig.add_hline(y=value, line_dash="dash", line_color=colour, annotation_text=text)
    fig.update_layout(height=360, title=f"{column} per class", margin=dict(l=10, r=10, t=50, b=10))
    return fig
