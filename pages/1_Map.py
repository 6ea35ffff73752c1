"""Map: the adapted embeddings in 2-D, every point in a density image; click, box or lasso to see images."""
import numpy as np
import streamlit as st

from selector.selection import annotate
from selector.ui import charts, hover, state, widgets
from selector.ui.density import rows_in_region
from selector.ui.views import map_rows, rows_from_selection
from selector.writer import table_bytes

run = state.require_run()
widgets.sidebar(run)
table = run.table
mask, _ = state.current_selection(run)

st.title("Map")
if run.result.config.map == "none":
    st.info("This run was made without a map. Re-run on the Home page with Map = UMAP or PCA "
            "(Advanced settings).")
    st.stop()
st.caption(f"{run.result.config.map.upper()} of the adapted image embeddings; nearby points look alike to the "
           "encoder. Every sample is drawn: a pixel's colour mixes its samples' colours, and its strength grows with "
           "how many it holds. Hover a point for its image, label and scores; click it to see it larger and decide on "
           "it beside the map. Dragging pans; choose the lasso or box in the toolbar at the top right to pick every "
           "sample inside a region and act on them below.")

state.restore_form("map")
colour = st.selectbox("Colour by", charts.colour_options(table), key="map_colour")
state.remember_form("map", ["map_colour"])
classes = run.result.class_names
if colour == "selected":                           # changes with the sliders: drawn afresh
    image = charts.map_image(table, mask, colour, classes=classes)
else:                                              # one image per colouring and run, shared by every session
    image = run.derived(f"map_image/{colour}", lambda: charts.map_image(table, mask, colour, classes=classes))
reachable = map_rows(len(table), limit=charts.MAX_MAP_POINTS, seed=0)
if len(reachable) < len(table):
    st.caption(f"All {len(table):,} samples are in the image; hovering and clicking reach a random "
               f"{len(reachable):,} of them, and a box or lasso picks every sample inside it.")
if colour == "label" and len(classes) > len(image.legend):
    st.caption(f"{len(classes):,} classes share {len(charts.PALETTE)} colours; the legend lists the first "
               f"{len(image.legend)}.")
if colour == "selected":
    fig = charts.map_figure(table, image, reachable, revision=run.key)
else:                                              # a click redraws the page: the figure is made once per colouring
    fig = run.derived(f"map_figure/{colour}", lambda: charts.map_figure(table, image, reachable, revision=run.key))

chart_col, detail_col = st.columns([3, 1])
with chart_col:
    chart_key = f"map_chart_{st.session_state.get('map_chart_gen', 0)}"
    event = st.plotly_chart(fig, key=chart_key, on_select="rerun", selection_mode=("points", "box", "lasso"))
    hover.thumbnails(run, chart_key)
selection = event.selection if event else None
region = rows_in_region(table[["map_x", "map_y"]].to_numpy(), selection)
picked_now = region if region is not None else np.asarray(rows_from_selection(selection), dtype=np.int64)
if len(picked_now):
    st.session_state[state.MAP_ROWS_KEY] = picked_now
picked = np.asarray(st.session_state.get(state.MAP_ROWS_KEY, []), dtype=np.int64)
picked = picked[(picked >= 0) & (picked < len(table))]

decisions = state.decisions(run)
widgets.step_messages()
with detail_col:
    if not len(picked):
        st.caption("Click a point to see its image, scores and decision here.")
    else:
        row = int(picked[0]) if len(picked) == 1 else int(picked[np.argmax(table["noise_score"].to_numpy()[picked])])
        widgets.sample_card(run, row, decisions, selected=bool(mask[row]), key="map_card",
                            title="Clicked sample" if len(picked) == 1 else "Most suspicious picked sample")

if len(picked):
    st.subheader(f"Picked on the map: {len(picked):,} sample{'' if len(picked) == 1 else 's'}")
    if st.button("Clear the picked samples", key="map_clear"):
        st.session_state.pop(state.MAP_ROWS_KEY, None)
        st.session_state["map_chart_gen"] = st.session_state.get("map_chart_gen", 0) + 1  # a fresh, empty chart
        st.rerun()
    rows = picked
    in_picked = sorted(table["label"].iloc[rows].astype(str).unique())
    only = st.selectbox("Given label", ["all"] + in_picked, key="map_label")
    if only != "all":
        rows = rows[(table["label"].iloc[rows].astype(str) == only).to_numpy()]
    rows = rows[np.argsort(-table["noise_score"].to_numpy()[rows], kind="stable")]
    what = "picked samples" + ("" if only == "all" else f" labelled {only}")
    widgets.bulk_decide(run, rows, decisions, key="map_bulk", what=what)
    widgets.undo_button(run, key="map_undo")
    settings, ids = state.settings(), table["id"].iloc[rows].astype(str).tolist()
    act = st.columns(3)
    if act[0].button(f"Always select these {len(rows):,}", key="map_keep",
                     help="Adds them to the keep list of your selection (Selection page, Export)."):
        state.set_settings(settings.replace(keep=list(settings.keep) + ids,
                                            never=[i for i in settings.never if i not in set(ids)]))
        st.rerun()
    if act[1].button(f"Never select these {len(rows):,}", key="map_never",
                     help="Adds them to the never list of your selection (Selection page, Export)."):
        state.set_settings(settings.replace(never=list(settings.never) + ids,
                                            keep=[i for i in settings.keep if i not in set(ids)]))
        st.rerun()
    chosen = state.selection(run)
    act[2].download_button(f"Export these {len(rows):,} (CSV)", key="map_export", on_click="ignore",
                           data=lambda: table_bytes(annotate(table.iloc[rows], chosen, mask[rows]), "csv"),
                           file_name="picked_on_map.csv", mime="text/csv")
    if settings.keep or settings.never:
        st.caption(f"Your selection keeps {len(settings.keep):,} and never selects {len(settings.never):,} listed "
                   "samples.")
    st.caption("Most suspicious first (highest noise score).")
    widgets.paged_gallery(run, rows, key="map_page", per_page=48)
