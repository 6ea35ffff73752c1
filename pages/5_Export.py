"""Export: the selected subset, the full per-sample table or the label decisions as CSV or Parquet, plus the
run manifest. The file downloaded is exactly the table shown, written by the engine's one writer
(`selector.writer`), so it holds the same bytes as the CLI's file for the same run and selection."""
import re

import streamlit as st

from selector.writer import FORMATS, manifest_bytes, manifest_for, table_bytes
from selector.selection import annotate
from selector.ui import state, widgets
from selector.ui.views import decisions_table

VIEWS = {"subset": "Selected subset", "full": "Full per-sample table", "decisions": "Label decisions"}
MIME = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}

run = state.require_run()
widgets.sidebar(run)
selection = state.selection(run)

st.title("Export")
state.restore_form("export")
mask, error = state.current_selection(run)
if error:
    st.warning(f"The current selection settings cannot be met, so nothing is selected: {error}")
full = annotate(run.table, selection, mask)
view = st.radio("Table", list(VIEWS), format_func=VIEWS.get, horizontal=True, key="export_view")
state.remember_form("export", ["export_view"])
if view == "subset":
    shown = full[full["selected"]].reset_index(drop=True)
elif view == "full":
    shown = full
else:
    shown = decisions_table(full)
settings = selection.as_dict()
st.caption(f"{len(shown):,} rows x {shown.shape[1]} columns. Selection: ratio {settings['ratio']:.2f}, weights "
           f"{settings['weights']}, strategy {settings['strategy']}, exclude flagged {settings['exclude_flagged']}, "
           f"exclude near-duplicates {settings['exclude_duplicates']}, class balance {settings['class_balance']}. "
           "CSV text that starts with = + - @ (or their full-width forms, also after spaces), tab or CR gets a "
           "leading ' so spreadsheets do not run it as a formula; loading the CSV back as a manifest removes it.")

stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", run.result.dataset.name).strip("-") or "dataset"
stem = f"{stem}_{view}"
columns = st.columns(len(FORMATS) + 1)
for col, fmt in zip(columns, FORMATS):
    col.download_button(f"Download {fmt.label}", data=lambda fmt=fmt.name: table_bytes(shown, fmt),
                        file_name=f"{stem}{fmt.value}", mime=MIME[fmt.name], key=f"download_{fmt.name}",
                        on_click="ignore", type="primary" if fmt.name == "csv" else "secondary")
columns[-1].download_button("Download run manifest (JSON)", key="download_manifest", on_click="ignore",
                            data=manifest_bytes(manifest_for(run.result, selection, shown)),
                            file_name=f"{stem}.manifest.json", mime="application/json")
# Display format only: the downloaded files carry the full-precision values.
score_format = {c: st.column_config.NumberColumn(format="%.4f") for c in shown.columns
                if shown[c].dtype.kind == "f" and c not in ("map_x", "map_y")}
st.dataframe(shown, hide_index=True, key="export_table", column_config=score_format)
