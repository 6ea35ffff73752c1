"""Map: the adapted embeddings in 2-D as a WebGL scatter; click, box or lasso points to see their images."""
import numpy as np
import streamlit as st

from selector.ui import charts, state, widgets
from selector.ui.views import map_rows, rows_from_selection

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
           "encoder. Click a point, or draw a box or lasso (toolbar at the top right of the chart), to see the "
           "images below.")

state.restore_form("map")
colour = st.selectbox("Colour by", charts.colour_options(table), key="map_colour")
state.remember_form("map", ["map_colour"])
drawn = map_rows(len(table), limit=charts.MAX_MAP_POINTS, always=table["flagged"].to_numpy(), seed=0)
if len(drawn) < len(table):
    st.caption(f"Drawing {len(drawn):,} of {len(table):,} points (every flagged one) to keep the browser fast.")
fig = charts.map_figure(table, mask, colour, drawn, classes=run.result.class_names, revision=run.key)

chart_col, detail_col = st.columns([3, 1])
with chart_col:
    chart_key = f"map_chart_{st.session_state.get('map_chart_gen', 0)}"
    event = st.plotly_chart(fig, key=chart_key, on_select="rerun", selection_mode=("points", "box", "lasso"))
picked_now = rows_from_selection(event.selection if event else None)
if picked_now:
    st.session_state[state.MAP_ROWS_KEY] = picked_now
picked = [r for r in st.session_state.get(state.MAP_ROWS_KEY, []) if 0 <= r < len(table)]

with detail_col:
    if not picked:
        st.caption("Click a point to see its image and scores here.")
    else:
        row = picked[0]
        sample = table.iloc[row]
        widgets.image_grid(run, [row], [f"row {row}: {sample['label']}"], width=160, size=160)
        st.markdown(f"**given** {sample['label']}  \n**suggested** {sample['suggested_label']}  \n"
                    f"**noise score** {sample['noise_score']:.3f}{' (flagged)' if sample['flagged'] else ''}  \n"
                    f"**alignment** {sample['alignment']:.3f}  \n**diversity** {sample['diversity']:.3f}  \n"
                    f"**selected** {'yes' if mask[row] else 'no'}")
        if sample["reason"]:
            st.caption(sample["reason"])

if picked:
    st.subheader(f"Picked on the map: {len(picked):,} sample{'' if len(picked) == 1 else 's'}")
    if st.button("Clear the picked samples", key="map_clear"):
        st.session_state.pop(state.MAP_ROWS_KEY, None)
        st.session_state["map_chart_gen"] = st.session_state.get("map_chart_gen", 0) + 1  # a fresh, empty chart
        st.rerun()
    widgets.paged_gallery(run, np.asarray(picked), key="map_page", per_page=48)
