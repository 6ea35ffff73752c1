"""Scores: the distribution of every per-sample score, overall or for one class, split into selected and
dropped, with the selection cut and the flag threshold drawn on."""
import numpy as np
import streamlit as st

from selector.selection import objective
from selector.table import SCORE_COLUMNS
from selector.ui import charts, state, widgets
from selector.ui.views import histogram, selection_cut

OBJECTIVE = "selection objective"
ALL = "All classes"

run = state.require_run()
widgets.sidebar(run)
table = run.table
settings = state.settings()
mask, _ = state.current_selection(run)
objective_values = objective(table, settings.weights)
threshold = run.result.flag_threshold

st.title("Scores")
state.restore_form("scores")
st.caption("Blue: in the current subset; grey: dropped. Dashed lines: the flag threshold on the noise score "
           "(and 1 - threshold on cleanliness) and, for the top-k strategy, the lowest objective value that "
           "made it into the subset.")
left, right = st.columns(2)
class_name = left.selectbox("Class", [ALL, *run.result.class_names], key="scores_class")
focus = right.selectbox("Score for the per-class view", [OBJECTIVE, *[c for c in SCORE_COLUMNS if c in table]],
                        key="scores_column")
state.remember_form("scores", ["scores_class", "scores_column"])
rows = np.arange(len(table)) if class_name == ALL else np.flatnonzero((table["label"] == class_name).to_numpy())


def lines_for(column):
    if column == "noise_score":
        return [(threshold, "flag threshold", "#d62728")]
    if column == "cleanliness":
        return [(1.0 - threshold, "flag threshold", "#d62728")]
    if column == OBJECTIVE and settings.strategy == "topk":
        cut = selection_cut(objective_values[rows], mask[rows])
        return [] if cut is None else [(cut, "selection cut", "#2b6cb0")]
    return []


def values_of(column):
    return objective_values if column == OBJECTIVE else table[column].to_numpy(dtype=np.float32)


st.plotly_chart(charts.histogram_figure(histogram(values_of(focus)[rows], mask[rows]),
                                        title=f"{focus} - {class_name}", lines=lines_for(focus)), key="scores_focus")
box_table = table[["label"]].assign(**{focus: values_of(focus)})
box_line = next(iter(lines_for(focus)), None) if class_name == ALL else None
st.plotly_chart(charts.class_box_figure(box_table, focus, classes=run.result.class_names, line=box_line),
                key="scores_per_class")

st.subheader(f"Every score - {class_name}")
columns = [OBJECTIVE, *[c for c in SCORE_COLUMNS if c in table]]
grid = st.columns(2)
for i, column in enumerate(columns):
    with grid[i % 2]:
        st.plotly_chart(charts.histogram_figure(histogram(values_of(column)[rows], mask[rows]), title=column,
                                                lines=lines_for(column)), key=f"scores_hist_{column}")
