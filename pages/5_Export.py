"""Export: the selected subset, the full per-sample table or the label decisions as CSV or Parquet, plus the
run manifest. The file downloaded is exactly the table shown (the same DataFrame object)."""
import re

import streamlit as st

from selector.ui import backend, state, widgets
from selector.ui.selection_view import decisions_table, export_table

VIEWS = {"subset": "Selected subset", "full": "Full per-sample table", "decisions": "Label decisions"}

run = state.require_run()
widgets.sidebar(run)
mask, error = state.current_selection(run)
decisions = state.decisions(run)
settings = state.settings()

st.title("Export")
state.restore_form("export")
if error:
    st.warning(f"The current selection settings cannot be met, so nothing is selected: {error}")
full = export_table(run.table, mask, decisions)
view = st.radio("Table", list(VIEWS), format_func=VIEWS.get, horizontal=True, key="export_view")
state.remember_form("export", ["export_view"])
if view == "subset":
    shown = full[full["selected"]].reset_index(drop=True)
elif view == "full":
    shown = full
else:
    shown = decisions_table(run.table, decisions)
st.caption(f"{len(shown):,} rows x {shown.shape[1]} columns. Selection: ratio {settings.ratio:.2f}, weights "
           f"{settings.weights}, strategy {settings.strategy}, exclude flagged {settings.exclude_flagged}, "
           f"exclude near-duplicates {settings.exclude_duplicates}, class balance {settings.class_balance}. CSV cells that start with = + - @ get a leading ' so "
           "spreadsheets do not run them as formulas.")

stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", run.result.dataset.name).strip("-") or "dataset"
stem = f"{stem}_{view}"
csv_col, parquet_col, manifest_col = st.columns(3)
csv_col.download_button("Download CSV", data=lambda: backend.table_bytes(shown, "csv"), file_name=f"{stem}.csv",
                        mime="text/csv", key="download_csv", on_click="ignore", type="primary")
parquet_col.download_button("Download Parquet", data=lambda: backend.table_bytes(shown, "parquet"),
                            file_name=f"{stem}.parquet", mime="application/vnd.apache.parquet",
                            key="download_parquet", on_click="ignore")
manifest_col.download_button("Download run manifest (JSON)", key="download_manifest", on_click="ignore",
                             data=backend.manifest_bytes(run, settings.as_dict(), n_selected=int(mask.sum()),
                                                         n_decisions=len(decisions)),
                             file_name=f"{stem}.manifest.json", mime="application/json")
# Display format only: the downloaded files carry the full-precision values.
score_format = {c: st.column_config.NumberColumn(format="%.4f") for c in shown.columns
                if shown[c].dtype.kind == "f" and c not in ("map_x", "map_y")}
st.dataframe(shown, hide_index=True, key="export_table", column_config=score_format)
