"""Duplicates and outliers: near-duplicate groups side by side with a "keep one per group" action, and the
images that match no class, ranked by how unusual they are."""
import numpy as np
import streamlit as st

from selector.ui import state, widgets
from selector.ui.views import duplicate_groups, keep_one_per_group, page_rows

GROUPS_PER_PAGE = 12

run = state.require_run()
widgets.sidebar(run)
table = run.table
ids = table["id"].astype(str).to_numpy()
labels = table["label"].astype(str).to_numpy()
decisions = state.decisions(run)
X = run.result.X

st.title("Duplicates & outliers")
recorded, undone = state.pop_recorded(), state.pop_undone()
if recorded and recorded.size:
    st.success(f"Marked {recorded.size:,} copies bad in one step ('Undo my last step' reverts them).")
if undone:
    st.success(f"Undone: {undone.restored:,} decision(s) restored to their previous value.")
last = state.last_step(run)
st.button(f"Undo my last step ({last.size:,} decision(s))" if last else "Undo my last step", key="dups_undo",
          on_click=state.undo_last_step, args=(run,), disabled=last is None,
          help=f"Reverts the last decision step of {state.reviewer()} on this dataset.")

dup_tab, ood_tab = st.tabs(["Near-duplicates", "Matches no class"])
with dup_tab:
    groups = duplicate_groups(table)
    n_copies = sum(len(g) - 1 for g in groups)
    st.caption(f"{len(groups):,} groups of near-identical images ({n_copies:,} copies). The first image of each "
               "group is the one kept; the selection already leaves the copies out while 'Exclude "
               "near-duplicates' is on. Marking the copies bad records that for the export and every reviewer.")
    if groups:
        pending = keep_one_per_group(table, groups, decisions)
        st.button(f"Keep one per group: mark {len(pending):,} copies bad", key="dups_keep_one",
                  disabled=not pending, on_click=state.record_decisions, args=(run, pending),
                  kwargs={"seen": {i: decisions.get(i) for i in pending}})
        page = widgets.pager(len(groups), GROUPS_PER_PAGE, "dups_page")
        for n, group in enumerate(page_rows(np.arange(len(groups)), page, GROUPS_PER_PAGE)):
            rows = groups[group]
            cos = X[rows] @ X[rows[0]]
            captions = [f"#{rows[0]} {labels[rows[0]]} (kept)"] + [
                f"#{r} {labels[r]} cos {c:.4f}" + (" - bad" if decisions.get(ids[r]) == "bad" else "")
                for r, c in zip(rows[1:], cos[1:])]
            st.markdown(f"**Group {group + 1}** - {len(rows)} images")
            widgets.image_grid(run, rows, captions)
    else:
        st.info("No near-duplicates found.")

with ood_tab:
    ood = np.flatnonzero(table["ood"].to_numpy())
    ranked = np.argsort(-table["ood_score"].to_numpy(), kind="stable")
    st.caption(f"{len(ood):,} images match no class well and sit far from their neighbours (flagged: "
               "corrupted, out of distribution, or of a class missing from the label set). Below: every image, "
               "most unusual first (ood_score), the flagged ones marked.")
    shown = page_rows(ranked, widgets.pager(len(ranked), 48, "ood_page"), 48)
    scores = table["ood_score"].to_numpy()
    flags = table["ood"].to_numpy()
    widgets.image_grid(run, shown, [f"#{r} {labels[r]} ({scores[r]:.1f})" + (" OOD" if flags[r] else "")
                                    for r in shown])
