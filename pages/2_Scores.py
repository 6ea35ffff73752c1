"""Scores: the distribution of every per-sample score, overall or for one class, split into selected and
dropped, with the selection cut (per class under class quotas) and the flag threshold drawn on. Click a bar
to see its samples."""
import numpy as np
import streamlit as st

from selector.selection import objective
from selector.table import SCORE_COLUMNS
from selector.ui import backend, charts, state, widgets
from selector.ui.views import bars_from_selection, class_cuts, histogram, rows_in_bins, selection_cut

OBJECTIVE = "selection objective"
ALL = "All classes"
BARS_KEY = "scores_bars"

run = state.require_run()
widgets.sidebar(run)
table = run.table
settings = state.settings()
mask, _ = state.current_selection(run)
objective_values = objective(table, settings.weights)
threshold = run.result.flag_threshold
classes = run.result.class_names
per_class = settings.class_balance              # each class fills its own quota: one cut per class
cut_name = "selection cut" if settings.strategy == "topk" else "lowest kept"

st.title("Scores")
state.restore_form("scores")
st.caption("Blue: in the current subset; grey: dropped. Dashed lines: the flag threshold on the noise score "
           f"(and 1 - threshold on cleanliness) and the {cut_name} on the selection objective: nothing below it "
           "is in the subset" + (" (one per class, drawn on the per-class chart, since every class fills its own "
                                 "quota)." if per_class else "."))
left, middle, right = st.columns([2, 2, 1])
class_name = left.selectbox("Class", [ALL, *classes], key="scores_class")
focus = middle.selectbox("Score for the per-class view", [OBJECTIVE, *[c for c in SCORE_COLUMNS if c in table]],
                         key="scores_column")
log = right.toggle("Log counts", key="scores_log", help="A logarithmic count axis, so a spike (e.g. many noise "
                                                        "scores near 0) does not flatten the rest.")
state.remember_form("scores", ["scores_class", "scores_column", "scores_log"])
rows = np.arange(len(table)) if class_name == ALL else np.flatnonzero((table["label"] == class_name).to_numpy())


def lines_for(column):
    if column == "noise_score":
        return [(threshold, "flag threshold", "#d62728")]
    if column == "cleanliness":
        return [(1.0 - threshold, "flag threshold", "#d62728")]
    if column == OBJECTIVE and (class_name != ALL or not per_class):
        cut = selection_cut(objective_values[rows], mask[rows])
        return [] if cut is None else [(cut, cut_name, "#2b6cb0")]
    return []


def values_of(column):
    return objective_values if column == OBJECTIVE else table[column].to_numpy(dtype=np.float32)


focus_hist = histogram(values_of(focus)[rows], mask[rows])
event = st.plotly_chart(charts.histogram_figure(focus_hist, title=f"{focus} - {class_name} (click a bar to see its "
                                                                  "samples)", lines=lines_for(focus), log=log),
                        key=f"scores_focus_{focus}_{class_name}", on_select="rerun", selection_mode=("points", "box"))
picked_bars = bars_from_selection(event.selection if event else None)
if picked_bars:
    st.session_state[BARS_KEY] = {"focus": focus, "class": class_name, "bars": picked_bars}
box_table = table[["label"]].assign(**{focus: values_of(focus)})
box_line = next(iter(lines_for(focus)), None) if class_name == ALL else None
codes = backend.label_codes(run, state.selection(run))    # the classes the quotas are filled in
cuts = class_cuts(objective_values, mask, codes, len(classes)) if focus == OBJECTIVE and per_class else None
st.plotly_chart(charts.class_box_figure(box_table, focus, classes=classes, line=box_line, cuts=cuts,
                                        cut_name=cut_name, codes=codes), key="scores_per_class")

picked = st.session_state.get(BARS_KEY)
if picked and picked["focus"] == focus and picked["class"] == class_name:
    chosen = rows[rows_in_bins(values_of(focus)[rows], mask[rows], focus_hist, picked["bars"])]
    chosen = chosen[np.argsort(-table["noise_score"].to_numpy()[chosen], kind="stable")]
    st.subheader(f"Samples in the picked bar{'s' if len(picked['bars']) > 1 else ''}: {len(chosen):,}")
    if st.button("Clear the picked bars", key="scores_clear"):
        st.session_state.pop(BARS_KEY, None)
        st.rerun()
    st.caption("Most suspicious first (highest noise score).")
    widgets.paged_gallery(run, chosen, key="scores_page", per_page=48)

st.subheader(f"Every score - {class_name}")
columns = [OBJECTIVE, *[c for c in SCORE_COLUMNS if c in table]]
grid = st.columns(2)
for i, column in enumerate(columns):
    with grid[i % 2]:
        st.plotly_chart(charts.histogram_figure(histogram(values_of(column)[rows], mask[rows]), title=column,
                                                lines=lines_for(column), log=log), key=f"scores_hist_{column}")
