"""Label issues: flagged samples, most suspicious first, with their nearest neighbours; the user accepts the
suggested label, keeps the given one, or marks the sample bad. Each decision is stored as it is made (with who
made it), every session sees the others' on its next rerun, and a reviewer can undo their last step."""
from collections import Counter

import streamlit as st

from selector.ui import state, widgets
from selector.selection import DECISIONS
from selector.ui.views import describe_event, flagged_order, page_rows

PER_PAGE = 10
N_NEIGHBOURS = 6
SHOW = {"all": "all flagged", "undecided": "not decided yet", "decided": "decided"}
ALL = "All classes"

run = state.require_run()
widgets.sidebar(run)
table = run.table
decisions = state.decisions(run)
D, I = run.result.neighbors

st.title("Label issues")
counts = Counter(decisions.values())
st.caption(f"{int(table['flagged'].sum()):,} flagged samples, most suspicious first. Decided so far: "
           f"{counts.get('accepted', 0)} suggestion accepted, {counts.get('kept', 0)} label kept, "
           f"{counts.get('bad', 0)} marked bad. Accepted labels replace the given ones in the export "
           "(corrected_label) and in class balancing; kept and accepted samples are no longer excluded as "
           "flagged; bad ones are never selected.")
last = state.last_step(run)
undone = state.pop_undone()
if undone:
    st.success(f"Undone: {undone.restored} decision(s) restored to their previous value"
               + (f"; {undone.skipped} changed by someone since were left as they are." if undone.skipped else "."))
st.button(f"Undo my last step ({last.size} decision(s), {last.at[11:19]} UTC)" if last else "Undo my last step",
          key="undo_last_step", on_click=state.undo_last_step, args=(run,), disabled=last is None,
          help=f"Reverts the last decision step of {state.reviewer()} on this dataset.")
state.restore_form("issues")
left, right = st.columns(2)
show = left.radio("Show", list(SHOW), format_func=SHOW.get, horizontal=True, key="issues_show")
class_name = right.selectbox("Given label", [ALL, *run.result.class_names], key="issues_class")
state.remember_form("issues", ["issues_show", "issues_class"])
rows = flagged_order(table, decisions=decisions, show=show, label=None if class_name == ALL else class_name)
if len(rows) == 0:
    st.info("No flagged samples match these filters.")
    st.stop()

page = widgets.pager(len(rows), PER_PAGE, key="issues_page")
state.remember_form("issues", ["issues_show", "issues_class", "issues_page"])
labels = table["label"].to_numpy()
shown = page_rows(rows, page, PER_PAGE)
history = state.history(run, table["id"].iloc[shown].astype(str))
for row in shown:
    sample = table.iloc[row]
    sid = str(sample["id"])
    decided = decisions.get(sid, "")
    with st.container(border=True, key=f"issue_{row}"):
        img_col, info_col, nn_col, act_col = st.columns([1, 2, 4, 1.4])
        with img_col:
            widgets.image_grid(run, [row], [f"row {row}"], width=96)
        info_col.markdown(f"**given:** {sample['label']} ({sample['given_prob']:.2f})  \n"
                          f"**suggested:** {sample['suggested_label']} ({sample['suggested_prob']:.2f})  \n"
                          f"**noise score:** {sample['noise_score']:.3f}")
        if sample["reason"]:
            info_col.caption(sample["reason"])
        if decided:
            info_col.markdown(f"**decision:** {decided}")
        if sid in history:
            info_col.caption("History: " + "; ".join(describe_event(e) for e in history[sid]))
        nn = [int(j) for j in I[row, :N_NEIGHBOURS] if j >= 0]
        with nn_col:
            st.caption("Nearest neighbours (label, cosine similarity)")
            widgets.image_grid(run, nn, [f"{labels[j]} ({s:.2f})" for j, s in zip(nn, D[row, :len(nn)])], width=64)
        with act_col:
            for choice in DECISIONS:
                pointless = choice.name == "accepted" and sample["suggested_label"] == sample["label"]
                st.button(choice.label, key=f"{choice.name}_{sid}", on_click=state.record_decision,
                          args=(run, sid, choice.name), disabled=decided == choice.name or pointless,
                          help=choice.help, width="stretch")
            if decided:
                st.button("Clear", key=f"clear_{sid}", on_click=state.record_decision, args=(run, sid, None),
                          help="Remove the decision on this sample.", width="stretch")
