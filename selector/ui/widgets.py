"""Widgets several pages share: the run summary in the sidebar, a pager, thumbnail grids, live progress."""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
import streamlit as st

from selector.ui import backend, state
from selector.selection import DECISIONS
from selector.ui.views import bulk_changes, describe_bulk, n_pages, page_rows


def sidebar(run: backend.Run) -> None:
    """What this page shows, in one glance: dataset, encoder, counts, current subset size; the reviewer's name.
    A decisions database that cannot be read or written is reported on the page."""
    mask, error = state.current_selection(run)
    table = run.table
    with st.sidebar:
        st.caption("Current run")
        st.markdown(f"**{run.result.dataset.name}** - {len(table):,} samples, "
                    f"{len(run.result.class_names)} classes")
        st.markdown(f"Encoder: {run.result.encoder_name}")
        st.markdown(f"Flagged: {int(table['flagged'].sum()):,} - Selected: "
                    f"{int(mask.sum()):,} ({state.settings().ratio:.0%})")
        if error:
            st.warning(error)
        state.reviewer_input()
    for message in state.decision_problems():
        st.error(message)


def pager(n: int, per_page: int, key: str) -> int:
    """A 'Page' number input (1-based) for a gallery of n items; returns the page."""
    pages = n_pages(n, per_page)
    if st.session_state.get(key, 1) > pages:
        st.session_state[key] = pages
    if pages <= 1:
        return 1
    left, right = st.columns([1, 5], vertical_alignment="bottom")
    page = left.number_input("Page", min_value=1, max_value=pages, step=1, key=key)
    right.caption(f"of {pages} ({n:,} samples, {per_page} per page)")
    return int(page)


def thumbs(run: backend.Run, rows: Sequence[int], size: int = backend.THUMB_PX) -> list[bytes]:
    """Cached thumbnails of rows; a grey square where there is no image."""
    blank = backend.placeholder_png(size)
    return [backend.thumbnail(run, int(r), size) or blank for r in rows]


def image_grid(run: backend.Run, rows: Sequence[int], captions: Sequence[str], *, width: int = 96,
               size: int = backend.THUMB_PX) -> None:
    """One st.image element holding many small images (cheap to send, wraps like a grid)."""
    if len(rows) == 0:
        return
    if not backend.has_images(run):          # embeddings-only dataset: captions without grey squares
        st.caption(" | ".join(captions))
        return
    st.image(thumbs(run, rows, size), caption=list(captions) or None, width=width)


def paged_gallery(run: backend.Run, rows: np.ndarray, *, key: str, per_page: int = 48) -> np.ndarray:
    """A paged grid of thumbnails captioned with label and noise score; returns the rows shown."""
    table = run.table
    page = pager(len(rows), per_page, key)
    shown = page_rows(rows, page, per_page)
    labels = table["label"].to_numpy()
    noise = table["noise_score"].to_numpy()
    captions = [f"#{r} {labels[r]} ({noise[r]:.2f})" for r in shown]
    image_grid(run, shown, captions)
    st.caption(f"{len(rows):,} samples; showing {len(shown)} (caption: row, given label, noise score).")
    return shown


class ProgressReporter:
    """The engine's progress callback drawn as a bar inside an st.status box, throttled to ~5 updates/s."""

    def __init__(self, status, min_interval: float = 0.2):
        self.status = status
        self.bar = status.progress(0.0, text="starting")
        self.min_interval = min_interval
        self.stage: Optional[str] = None
        self.stage_t0 = time.perf_counter()
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        new_stage = stage != self.stage
        if new_stage:
            if self.stage is not None:
                self.status.write(f"{self.stage}: done in {now - self.stage_t0:.1f} s")
            self.stage, self.stage_t0 = stage, now
            self.status.update(label=f"Running: {stage}...", expanded=True)
        if not (new_stage or done >= total or now - self.last >= self.min_interval):
            return
        self.last = now
        frac = min(max(done / total, 0.0), 1.0) if total else 0.0
        self.bar.progress(frac, text=f"{stage}: {done:,} / {total:,}")

    def finish(self, label: str) -> None:
        if self.stage is not None:
            self.status.write(f"{self.stage}: done in {time.perf_counter() - self.stage_t0:.1f} s")
        self.bar.progress(1.0, text="done")
        self.status.update(label=label, state="complete", expanded=False)


def sample_card(run: backend.Run, row: int, decisions: dict, *, selected: bool, key: str, title: str) -> None:
    """One sample at a glance: its image, given and suggested label, scores, reason, decision, and the decision
    buttons (each one step of this reviewer, like the Label issues page's)."""
    sample = run.table.iloc[row]
    sid = str(sample["id"])
    decided = decisions.get(sid) or None
    with st.container(border=True, key=key):
        st.markdown(f"**{title}** (row {row})")
        image_grid(run, [row], [sid], width=160, size=160)
        st.markdown(f"**given** {sample['label']} ({sample['given_prob']:.2f})  \n"
                    f"**suggested** {sample['suggested_label']} ({sample['suggested_prob']:.2f})  \n"
                    f"**noise score** {sample['noise_score']:.3f}{' (flagged)' if sample['flagged'] else ''}  \n"
                    f"**alignment** {sample['alignment']:.3f}  \n**diversity** {sample['diversity']:.3f}  \n"
                    f"**selected** {'yes' if selected else 'no'}  \n**decision** {decided or 'none'}")
        if sample["reason"]:
            st.caption(sample["reason"])
        for choice in DECISIONS:
            pointless = choice.name == "accepted" and sample["suggested_label"] == sample["label"]
            st.button(choice.label, key=f"{key}_{choice.name}", on_click=state.record_decision,
                      args=(run, sid, choice.name, decided), disabled=decided == choice.name or pointless,
                      help=choice.help, width="stretch")
        if decided:
            st.button("Clear", key=f"{key}_clear", on_click=state.record_decision, args=(run, sid, None, decided),
                      help="Remove the decision on this sample.", width="stretch")


def bulk_decide(run: backend.Run, rows: np.ndarray, decisions: dict, *, key: str, what: str) -> None:
    """An expander that records one decision for every one of `rows` as one undoable step, with a preview of
    what it would change. what: how the rows are described ("samples of this view")."""
    with st.expander(f"Decide all {len(rows):,} {what} at once"):
        bulk = st.radio("Decision", DECISIONS.names(), format_func=DECISIONS.label, horizontal=True,
                        key=f"{key}_decision")
        changes, preview = bulk_changes(run.table, rows, bulk, decisions)
        st.caption(describe_bulk(preview, DECISIONS.label(bulk)))
        st.button(f"Apply '{DECISIONS.label(bulk)}' to {len(changes):,} samples", key=f"{key}_apply",
                  on_click=state.record_decisions, args=(run, changes, {s: decisions.get(s) for s in changes}),
                  disabled=not changes, type="primary")


def undo_button(run: backend.Run, *, key: str, on_click=None, shortcut: Optional[str] = None, where=st) -> None:
    """'Undo my last step': reverts this reviewer's last decision step on the dataset (a bulk action is one
    step), wherever it was taken. on_click: what undoes (default `state.undo_last_step`); where: a column."""
    last = state.last_step(run)
    where.button(f"Undo my last step ({last.size:,} decision(s), {last.at[11:19]} UTC)" if last else
                 "Undo my last step", key=key, on_click=on_click or state.undo_last_step, args=(run,),
                 disabled=last is None, shortcut=shortcut,
                 help=f"Reverts the last decision step of {state.reviewer()} on this dataset.")


def step_messages() -> None:
    """What this session's last decision step or undo did (once): samples someone else had decided meanwhile,
    a bulk step's size, an undo's result."""
    recorded = state.pop_recorded()
    if recorded and recorded.conflicts:
        st.warning(f"{recorded.conflicts} sample(s) had been decided by someone else meanwhile and were left as "
                   "they are; they now show that decision.")
    if recorded and recorded.size > 1:
        st.success(f"Applied: {recorded.size:,} decisions in one step ('Undo my last step' reverts them).")
    undone_message(state.pop_undone())


def undone_message(undone) -> None:
    """What an undo just did (`state.pop_undone()`), or nothing."""
    if undone:
        st.success(f"Undone: {undone.restored:,} decision(s) restored to their previous value"
                   + (f"; {undone.skipped} changed by someone since were left as they are." if undone.skipped
                      else "."))
