"""Thumbnails on hover for the Map page's chart: a small Streamlit component (map_hover.js) listens to the Plotly
chart's hover events and shows the image of the sample under the cursor beside it.

Plotly's own hover label can only hold text, so the component asks for an image it has not shown yet through its
`row` state, and only this fragment re-runs to answer with the row's thumbnail (the same cached PNGs as the
galleries); the browser keeps every image it has received for the page's life.
"""
from __future__ import annotations

import base64
from pathlib import Path

import streamlit as st

from selector.ui import backend

KEY = "map_hover"
SIZE = 128                  # px on the long side (the card shows it at 112 css px)
_JS = (Path(__file__).with_name("map_hover.js")).read_text(encoding="utf-8")
_component = st.components.v2.component("selector_map_hover", js=_JS, isolate_styles=False)


def thumbnails(run: backend.Run, chart_key: str) -> None:
    """Show the hovered sample's image beside the cursor on the Plotly chart drawn with key `chart_key`, whose
    trace named "samples" carries each row's index as customdata[0]. Nothing for a run without images."""
    if backend.has_images(run):
        _answer(run, chart_key)


@st.fragment
def _answer(run: backend.Run, chart_key: str) -> None:
    asked = (st.session_state.get(KEY) or {}).get("row")
    row = int(asked) if isinstance(asked, (int, float)) and 0 <= asked < len(run.table) else None
    src = None
    if row is not None:              # an image that cannot be decoded shows as the galleries' grey square
        png = backend.thumbnail(run, row, SIZE) or backend.placeholder_png(SIZE)
        src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    _component(key=KEY, data={"run": run.key, "chart": chart_key, "row": row, "src": src},
               on_row_change=lambda: None)
