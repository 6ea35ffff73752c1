"""Duplicates and outliers: near-duplicate groups side by side with a "keep one per group" action,
near-duplicates leaked across splits (with a split column), the groups that look like a class missing from
the label set, and every image ranked by how unusual it is."""
import numpy as np
import streamlit as st

from selector.errors import InputError
from selector.ui import state, widgets
from selector.ui.views import (duplicate_groups, keep_one_per_group, leaked_groups, missing_class_groups,
                               page_rows)

GROUPS_PER_PAGE = 12
GROUP_SAMPLE = 24      # images shown of each missing-class group

run = state.require_run()
widgets.sidebar(run)
table = run.table
ids = table["id"].astype(str).to_numpy()
labels = table["label"].astype(str).to_numpy()
decisions = state.decisions(run)


def frozen_embeddings():
    """The run's frozen image embeddings: a re-opened run reads them on first use, once for every session
    (selector.lazy); None, with the reason on the page, when they cannot be read."""
    X = run.result.X
    if getattr(X, "loaded", True):
        return X
    try:
        with st.spinner(f"Reading the image embeddings of {len(X):,} samples (once for this run) ..."):
            return X.load()
    except (InputError, OSError) as exc:
        st.error(f"The similarities within each group cannot be shown: the image embeddings cannot be read ({exc}).")
        return None


st.title("Duplicates & outliers")
recorded, undone = state.pop_recorded(), state.pop_undone()
if recorded and recorded.size:
    st.success(f"Marked {recorded.size:,} copies bad in one step ('Undo my last step' reverts them).")
widgets.undone_message(undone)
widgets.undo_button(run, key="dups_undo")

splits = table["split"].astype(str).to_numpy() if "split" in table else None
names = ["Near-duplicates"] + (["Leaked across splits"] if splits is not None else []) + ["Matches no class"]
tabs = dict(zip(names, st.tabs(names)))
dup_tab, ood_tab = tabs["Near-duplicates"], tabs["Matches no class"]
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
        X = frozen_embeddings()
        for n, group in enumerate(page_rows(np.arange(len(groups)), page, GROUPS_PER_PAGE)):
            rows = groups[group]
            cos = X[rows] @ X[rows[0]] if X is not None else np.full(len(rows), np.nan)
            captions = [f"#{rows[0]} {labels[rows[0]]} (kept)"] + [
                f"#{r} {labels[r]}" + (f" cos {c:.4f}" if np.isfinite(c) else "")
                + (" - bad" if decisions.get(ids[r]) == "bad" else "") for r, c in zip(rows[1:], cos[1:])]
            st.markdown(f"**Group {group + 1}** - {len(rows)} images")
            widgets.image_grid(run, rows, captions)
    else:
        st.info("No near-duplicates found.")

if splits is not None:
    with tabs["Leaked across splits"]:
        leaks = leaked_groups(table)
        n_leaked = int((table["leak_of"].to_numpy() >= 0).sum())
        st.caption(f"{n_leaked:,} images have a near-duplicate in another split ({len(leaks):,} groups): the same "
                   "image in train and test makes a test score too optimistic. Each group is shown with the split "
                   "of every image.")
        if leaks:
            page = widgets.pager(len(leaks), GROUPS_PER_PAGE, "leaks_page")
            for n, group in enumerate(page_rows(np.arange(len(leaks)), page, GROUPS_PER_PAGE)):
                rows = leaks[group]
                st.markdown(f"**Leak {group + 1}** - {len(rows)} images in "
                            f"{len(set(splits[rows]))} splits ({', '.join(sorted(set(splits[rows])))})")
                widgets.image_grid(run, rows, [f"#{r} {labels[r]} [{splits[r]}]" for r in rows])
        else:
            st.info("No near-duplicates across splits.")

with ood_tab:
    for g, rows in enumerate(missing_class_groups(table)):
        spread = table["label"].iloc[rows].value_counts()
        st.warning(f"Group {g + 1}: {len(rows):,} similar images match no class, and their labels are scattered "
                   f"over {len(spread)} classes (most: {spread.index[0]!r}, {int(spread.iloc[0]):,}): a class "
                   "missing from the label set? They are not counted as label errors (no suggested label can be "
                   f"right); as OOD they stay out of the selection while flagged samples are excluded. The first {min(len(rows), GROUP_SAMPLE)}:")
        widgets.image_grid(run, rows[:GROUP_SAMPLE], [f"#{r} {labels[r]}" for r in rows[:GROUP_SAMPLE]])
    ood = np.flatnonzero(table["ood"].to_numpy())
    ranked = np.argsort(-table["ood_score"].to_numpy(), kind="stable")
    st.caption(f"{len(ood):,} images are out of distribution: far from every class and from their neighbours "
               "(corrupted or unusual), or in a group of a class missing from the label set. Below: every image, "
               "most unusual first (ood_score), the OOD ones marked.")
    shown = page_rows(ranked, widgets.pager(len(ranked), 48, "ood_page"), 48)
    scores = table["ood_score"].to_numpy()
    flags = table["ood"].to_numpy()
    widgets.image_grid(run, shown, [f"#{r} {labels[r]} ({scores[r]:.1f})" + (" OOD" if flags[r] else "")
                                    for r in shown])
