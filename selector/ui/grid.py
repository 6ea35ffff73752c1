"""The Label issues grid: dozens of flagged samples on one screen, one of them in focus, decided from the keyboard.

Keys (Streamlit button shortcuts; each button shows its key): A accepts the suggestion, K keeps the label, B marks
the sample bad (each moves the focus on to the next sample), Left / Right move the focus, P / N turn the page,
U undoes this reviewer's last step and brings the focus back to the sample it reverted. Every decision goes
through the decisions database like the card view's buttons (`state.record_decisions`), one step per key.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from selector.selection import DECISIONS
from selector.ui import backend, state, widgets
from selector.ui.views import n_pages, similarity_percentile

COLUMNS, ROWS = 8, 5
PER_PAGE = COLUMNS * ROWS
FOCUS_KEY = "issues_focus"            # the sample id in focus
PAGE_KEY = "issues_page"
SHORTCUTS = {"accepted": "A", "kept": "K", "bad": "B"}
KEYS_HELP = ("Keys: **A** accept the suggestion, **K** keep the label, **B** mark bad (then the next sample), "
             "**←/→** previous/next sample, **P/N** previous/next page, **U** undo my last step.")
_FOLLOW = "_issues_follow"            # set by a key press: the next run shows the page of the sample in focus
_STEPS = "_issues_grid_steps"         # {batch id: sample id} of the grid's decisions, so undo can refocus
_MAX_STEPS = 200


# ---------------------------------------------------------------------------------------------- callbacks
def _focus_on(sample_id) -> None:
    if sample_id is not None:
        st.session_state[FOCUS_KEY] = str(sample_id)
        st.session_state[_FOLLOW] = True


def _decide(run: backend.Run, sample_id: str, decision, seen, then) -> None:
    """Record `decision` on the sample in focus (nothing when it holds it already), then focus `then`."""
    if decision != seen:
        batch = state.record_decisions(run, {sample_id: decision}, {sample_id: seen})
        if batch is not None:
            steps = st.session_state.setdefault(_STEPS, {})
            steps[batch.id] = sample_id
            while len(steps) > _MAX_STEPS:
                steps.pop(next(iter(steps)))
    if decision is not None:
        _focus_on(then)


def _turn(page: int, pages: int) -> None:
    st.session_state[PAGE_KEY] = min(max(int(page), 1), pages)
    st.session_state.pop(FOCUS_KEY, None)         # the new page's first sample takes the focus


def undo(run: backend.Run) -> None:
    """'Undo my last step' (key U); when that step was a grid decision, its sample comes back into focus."""
    last = state.last_step(run)
    undone = state.undo_last_step(run)
    sample_id = st.session_state.get(_STEPS, {}).pop(last.id, None) if last is not None else None
    if undone is not None and sample_id is not None:
        _focus_on(sample_id)


# ------------------------------------------------------------------------------------------------ drawing
def follow_focus(ids: np.ndarray) -> None:
    """Before the pager is drawn: after a key moved the focus, turn to the page that holds it."""
    focus = st.session_state.get(FOCUS_KEY)
    if st.session_state.pop(_FOLLOW, False) and focus is not None:
        where = np.flatnonzero(ids == focus)
        if len(where):
            st.session_state[PAGE_KEY] = int(where[0]) // PER_PAGE + 1


def neighbour_strip(run: backend.Run, row: int, n: int, *, width: int) -> None:
    """The row's n nearest neighbours, captioned with their label and how close they are for this dataset: the
    percentile of the similarity among every sample's nearest-neighbour similarity (p90: closer than 90% of the
    dataset's nearest pairs; computed once per run)."""
    D, I = run.result.neighbors
    ref = run.derived("nn1_similarities", lambda: np.sort(np.asarray(D[:, 0], np.float64)[np.asarray(I[:, 0]) >= 0]))
    nn = [int(j) for j in I[row, :n] if j >= 0]
    pct = similarity_percentile(ref, np.asarray(D[row, :len(nn)], np.float64))
    labels = run.table["label"].to_numpy()
    widgets.image_grid(run, nn, [f"{labels[j]} (p{p})" for j, p in zip(nn, pct)], width=width)


def show(run: backend.Run, rows: np.ndarray, ids: np.ndarray, page: int, decisions: dict, score: str,
         score_name: str) -> None:
    """The grid of this page's samples (the one in focus highlighted; a click focuses one) and, beside it, the
    sample in focus with its scores, neighbours and the decision and navigation buttons with their keys."""
    table = run.table
    start = (page - 1) * PER_PAGE
    shown, shown_ids = rows[start:start + PER_PAGE], ids[start:start + PER_PAGE]
    focus = st.session_state.get(FOCUS_KEY)
    if focus not in set(shown_ids):
        focus = st.session_state[FOCUS_KEY] = str(shown_ids[0])
    at = start + int(np.flatnonzero(shown_ids == focus)[0])
    labels, suggested = table["label"].to_numpy(), table["suggested_label"].to_numpy()
    values = table[score].to_numpy()
    grid_col, card_col = st.columns([3, 1])
    with grid_col:
        for r0 in range(0, len(shown), COLUMNS):
            cells = st.columns(COLUMNS)
            for cell, row, sid in zip(cells, shown[r0:r0 + COLUMNS], shown_ids[r0:r0 + COLUMNS]):
                decided = decisions.get(sid, "")
                with cell.container(key=f"cell_{row}", gap="small"):
                    widgets.image_grid(run, [row], [], width=64)
                    text = "in focus" if sid == focus else f"{labels[row]} → {suggested[row]}"  # the card has it
                    st.button((f"{decided}: " if decided else "") + text,
                              key=f"focus_{row}", type="primary" if sid == focus else "tertiary",
                              on_click=_focus_on, args=(sid,), width="stretch",
                              help=f"{score_name} {values[row]:.3f}. Click to put this sample in focus.")
    with card_col:
        _card(run, int(rows[at]), focus, decisions.get(focus) or None,
              then=ids[at + 1] if at + 1 < len(ids) else None, before=ids[at - 1] if at else None,
              position=(at, len(ids), page, n_pages(len(ids), PER_PAGE)))


def _card(run: backend.Run, row: int, sid: str, decided, *, then, before, position) -> None:
    at, n, page, pages = position
    sample = run.table.iloc[row]
    with st.container(border=True, key="grid_focus"):
        st.markdown(f"**In focus: {at + 1:,} of {n:,}** (row {row})")
        widgets.image_grid(run, [row], [str(sid)], width=96, size=128)
        st.markdown(f"**given:** {sample['label']} ({sample['given_prob']:.2f})  \n"
                    f"**suggested:** {sample['suggested_label']} ({sample['suggested_prob']:.2f})  \n"
                    f"**noise score:** {sample['noise_score']:.3f}"
                    + (f"  \n**decision:** {decided}" if decided else ""))
        for choice in DECISIONS:
            pointless = choice.name == "accepted" and sample["suggested_label"] == sample["label"]
            st.button(choice.label, key=f"grid_{choice.name}", shortcut=SHORTCUTS[choice.name], width="stretch",
                      on_click=_decide, args=(run, sid, choice.name, decided, then), disabled=pointless,
                      help=choice.help + " Then the next sample comes into focus.")
        if decided:
            st.button("Clear", key="grid_clear", on_click=_decide, args=(run, sid, None, decided, None),
                      width="stretch", help="Remove the decision on this sample.")
        left, right = st.columns(2)
        left.button("Back", key="grid_prev", shortcut="Left", on_click=_focus_on, args=(before,),
                    disabled=before is None, width="stretch", help="The previous sample.")
        right.button("Next", key="grid_next", shortcut="Right", on_click=_focus_on, args=(then,),
                     disabled=then is None, width="stretch", help="The next sample.")
        st.button("Previous page", key="grid_prev_page", shortcut="P", on_click=_turn, args=(page - 1, pages),
                  disabled=page <= 1, width="stretch")
        st.button("Next page", key="grid_next_page", shortcut="N", on_click=_turn, args=(page + 1, pages),
                  disabled=page >= pages, width="stretch")
        if sample["reason"]:
            st.caption(sample["reason"])
        st.caption("Nearest neighbours (label, pNN: closer than NN% of the dataset's nearest pairs)")
        neighbour_strip(run, row, 3, width=48)
        st.caption(KEYS_HELP)
