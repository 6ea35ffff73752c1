"""Label issues: flagged samples, most suspicious first, with their nearest neighbours; the user accepts the
suggested label, keeps the given one, or marks the sample bad, one sample at a time or for every sample of the
current view at once. Each decision is stored as it is made (with who made it), every session sees the others'
on its next rerun, a page drawn before someone else's decision never overwrites it, and a reviewer can undo
their last step (a bulk action is one step). The grid view shows 40 samples a page and is driven from the
keyboard (selector.ui.grid)."""
from collections import Counter

import streamlit as st

from selector.ui import grid, state, widgets
from selector.selection import DECISIONS
from selector.ui.views import SORT_SCORES, describe_event, flagged_order, page_rows

PER_PAGE = 10
N_NEIGHBOURS = 6
SHOW = {"all": "all flagged", "undecided": "not decided yet", "decided": "decided"}
ORDER = {"high": "highest first", "low": "lowest first"}
VIEWS = {"cards": "cards", "grid": "grid"}
ALL = "All classes"
FORM = ["issues_view", "issues_show", "issues_class", "issues_suggested", "issues_score", "issues_order", "issues_page"]

run = state.require_run()
widgets.sidebar(run)
table = run.table
decisions = state.decisions(run)

st.title("Label issues")
counts = Counter(decisions.values())
st.caption(f"{int(table['flagged'].sum()):,} flagged samples, most suspicious first. Decided so far: "
           f"{counts.get('accepted', 0)} suggestion accepted, {counts.get('kept', 0)} label kept, "
           f"{counts.get('bad', 0)} marked bad. Accepted labels replace the given ones in the export "
           "(corrected_label) and in class balancing; kept and accepted samples are no longer excluded as "
           "flagged; bad ones are never selected.")
widgets.step_messages()
state.restore_form("issues")
undo_col, view_col, page_col = st.columns([3, 2, 2], vertical_alignment="bottom")
widgets.undo_button(run, key="undo_last_step", on_click=grid.undo, shortcut="U", where=undo_col)
view = view_col.radio("View", list(VIEWS), format_func=VIEWS.get, horizontal=True, key="issues_view",
                      help=f"cards: {PER_PAGE} samples a page with their neighbours; grid: {grid.PER_PAGE} a page, "
                           "one in focus, decided from the keyboard.")
with st.expander("Filters and sort") if view == "grid" else st.container():   # the grid starts near the top
    c1, c2, c3 = st.columns(3)
    show = c1.radio("Show", list(SHOW), format_func=SHOW.get, horizontal=True, key="issues_show")
    class_name = c2.selectbox("Given label", [ALL, *run.result.class_names], key="issues_class")
    suggested = c3.selectbox("Suggested label", [ALL, *run.result.class_names], key="issues_suggested")
    c1, c2, c3 = st.columns(3)
    score = c1.selectbox("Sort by", list(SORT_SCORES), format_func=SORT_SCORES.get, key="issues_score")
    order = c2.radio("Order", list(ORDER), format_func=ORDER.get, horizontal=True, key="issues_order")
    values = table.loc[table["flagged"], score]
    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 0.0)
    score_range, range_key = None, f"issues_range_{score}"
    if high > low:
        held = st.session_state.get(range_key, (low, high))
        st.session_state[range_key] = (min(max(held[0], low), high), max(min(held[1], high), low))
        score_range = c3.slider("Score range", min_value=low, max_value=high, step=(high - low) / 100,
                                format="%.3f", key=range_key)
state.remember_form("issues", FORM + [range_key])
rows = flagged_order(table, decisions=decisions, show=show, label=None if class_name == ALL else class_name,
                     suggested=None if suggested == ALL else suggested, score=score, score_range=score_range,
                     descending=order == "high")
if len(rows) == 0:
    st.info("No flagged samples match these filters.")
    st.stop()

widgets.bulk_decide(run, rows, decisions, key="bulk", what="samples of this view")

if view == "grid":
    ids = table["id"].to_numpy()[rows].astype(str)
    grid.follow_focus(ids)
    with page_col:                                 # beside the view switch: the grid starts near the top
        page = widgets.pager(len(rows), grid.PER_PAGE, key=grid.PAGE_KEY)
    state.remember_form("issues", FORM + [range_key])
    grid.show(run, rows, ids, page, decisions, score, SORT_SCORES[score])
    st.stop()

page = widgets.pager(len(rows), PER_PAGE, key=grid.PAGE_KEY)
state.remember_form("issues", FORM + [range_key])
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
                          f"**noise score:** {sample['noise_score']:.3f}"
                          + (f"  \n**{SORT_SCORES[score]}:** {sample[score]:.4f}" if score != "noise_score" else ""))
        if sample["reason"]:
            info_col.caption(sample["reason"])
        if decided:
            info_col.markdown(f"**decision:** {decided}")
        if sid in history:
            info_col.caption("History: " + "; ".join(describe_event(e) for e in history[sid]))
        with nn_col:
            st.caption("Nearest neighbours (label, pNN: the similarity is higher than NN% of the dataset's "
                       "nearest-neighbour similarities)")
            grid.neighbour_strip(run, row, N_NEIGHBOURS, width=64)
        with act_col:
            for choice in DECISIONS:
                pointless = choice.name == "accepted" and sample["suggested_label"] == sample["label"]
                st.button(choice.label, key=f"{choice.name}_{sid}", on_click=state.record_decision,
                          args=(run, sid, choice.name, decided or None), disabled=decided == choice.name or pointless,
                          help=choice.help, width="stretch")
            if decided:
                st.button("Clear", key=f"clear_{sid}", on_click=state.record_decision, args=(run, sid, None, decided),
                          help="Remove the decision on this sample.", width="stretch")
