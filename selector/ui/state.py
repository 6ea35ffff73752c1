"""Per-browser-session state: which run this user looks at, their selection settings and label decisions.

Everything here lives in st.session_state, so one user's sliders never change another user's view; the
shared, read-only heavy objects live in backend.py. Label decisions belong to the dataset, not the session:
they live in the cache folder's decisions database (`selector.decision_store`), read on every rerun (one indexed
query; the decisions themselves only when another session or process changed them) and written as each one is
made, with this session's reviewer name (or its id) as who made it.
"""
from __future__ import annotations

import uuid
from typing import Optional

import numpy as np
import streamlit as st

from selector.decision_store import Batch, DecisionStore, Event, Undone
from selector.errors import InputError, OfflineError
from selector.selection import Selection, selection_mask
from selector.ui import backend

RUN_KEY = "run_key"
SPEC_KEY = "run_spec"
SETTINGS_KEY = "selection_settings"
DECISIONS_KEY = "decisions"
REVIEWER_LABEL = "Reviewer name"
_REVIEWER = "_reviewer_name"
_SESSION_ID = "_session_id"
_READ_PROBLEM = "_decisions_read_problem"
_WRITE_PROBLEM = "_decisions_write_problem"
_UNDONE = "_decisions_undone"
_NOTE = "_decisions_recorded"
MAP_ROWS_KEY = "map_rows"
URL_KEY = "run"                 # the query parameter that names the run: ?run=<key>
_MEMO_KEY = "_selection_memo"
HOME_PAGE = "pages/0_Home.py"


def set_run(run: backend.Run) -> None:
    """Make `run` this session's current run (keeps settings; drops the map selection of the old run). The
    run's key also goes into the page's URL (?run=...), so a reload or a bookmark opens the same run."""
    if st.session_state.get(RUN_KEY) != run.key:
        st.session_state.pop(MAP_ROWS_KEY, None)
    st.session_state[RUN_KEY] = run.key
    st.session_state[SPEC_KEY] = run.spec
    if st.query_params.get(URL_KEY) != run.key:
        st.query_params[URL_KEY] = run.key


def clear_run() -> None:
    """This session looks at no run (e.g. its last one failed): pages point to Home, the URL names none."""
    for key in (RUN_KEY, SPEC_KEY, MAP_ROWS_KEY):
        st.session_state.pop(key, None)
    if URL_KEY in st.query_params:
        del st.query_params[URL_KEY]


def current_run() -> Optional[backend.Run]:
    """This session's run, or None. A run evicted from memory, or named only by the URL (a reload, a
    bookmark, a link from a colleague on the same server), is re-opened from the disk cache."""
    key = st.session_state.get(RUN_KEY) or st.query_params.get(URL_KEY)
    if not key:
        return None
    run = backend.find_run(key)
    spec = st.session_state.get(SPEC_KEY) if st.session_state.get(RUN_KEY) == key else backend.saved_spec(key)
    if run is None and spec is not None:
        with st.spinner("Re-opening the run from the cache..."):
            try:
                run = backend.run_pipeline(spec)
            except (InputError, OfflineError) as exc:
                st.error(f"The run could not be re-opened: {exc}")
                return None
    if run is None:
        if st.query_params.get(URL_KEY) == key and not st.session_state.get(RUN_KEY):
            st.warning(f"This link names run {key}, which this server has no record of (a different cache "
                       "folder, or the cache was cleared). Start a run on the Home page.")
        return None
    set_run(run)
    return run


def require_run() -> backend.Run:
    """The current run; without one, a note pointing to Home and st.stop()."""
    run = current_run()
    if run is None:
        st.info("Run the pipeline on the Home page first.")
        st.page_link(HOME_PAGE, label="Go to Home", icon=":material/home:")
        st.stop()
    return run


# ------------------------------------------------------------------------------------------ settings
def settings() -> Selection:
    """This session's selection settings (decisions are kept apart: they belong to the dataset)."""
    return st.session_state.get(SETTINGS_KEY) or Selection()


def set_settings(value: Selection) -> None:
    st.session_state[SETTINGS_KEY] = value


def selection(run: backend.Run) -> Selection:
    """This session's settings with the dataset's decisions: what the export writes."""
    return settings().replace(decisions=decisions(run))


def seed_widget(key: str, value) -> None:
    """Give a keyed widget its persisted value when it is (re)created; streamlit drops the state of widgets
    on pages the user left, so the persisted copy lives under a non-widget key (see set_settings)."""
    if key not in st.session_state:
        st.session_state[key] = value


def restore_form(name: str) -> None:
    """Re-seed a page's input widgets with the values this session last gave them (see remember_form)."""
    for key, value in st.session_state.get(f"_form_{name}", {}).items():
        seed_widget(key, value)


def remember_form(name: str, keys) -> None:
    """Keep the current values of these widget keys so the page shows them again after a page switch."""
    st.session_state[f"_form_{name}"] = {k: st.session_state[k] for k in keys if k in st.session_state}


# ----------------------------------------------------------------------------------------- decisions
def reviewer() -> str:
    """Who this session's decisions are recorded as: the reviewer name it gave, else an id made for the session."""
    return str(st.session_state.get(_REVIEWER) or "").strip() or session_id()


def session_id() -> str:
    """A random id made for this browser session on first use."""
    if _SESSION_ID not in st.session_state:
        st.session_state[_SESSION_ID] = f"session-{uuid.uuid4().hex[:8]}"
    return st.session_state[_SESSION_ID]


def reviewer_input() -> None:
    """The reviewer-name text input (sidebar); the name is kept for the session across pages. The widget has no
    key: its value comes from the session's copy, because the state of a keyed widget that every page draws is
    reset when the page changes."""
    name = st.text_input(REVIEWER_LABEL, value=st.session_state.get(_REVIEWER, ""), placeholder=session_id(),
                         help="Recorded with each label decision you make (without one, this browser session's id "
                              "is), and whose last step 'Undo my last step' reverts.")
    st.session_state[_REVIEWER] = str(name or "").strip()


def store(run: backend.Run) -> DecisionStore:
    return DecisionStore.for_cache(run.cache_dir)


def decisions(run: backend.Run) -> dict[str, str]:
    """The dataset's label decisions {sample id: accepted|kept|bad} as stored now, by every session and process.
    When the database cannot be read, the last decisions this session read (or none), and decision_problems()
    says why."""
    held = st.session_state.get(DECISIONS_KEY)
    if held and held.get("fingerprint") != run.fingerprint:
        held = None
    db = store(run)
    try:
        version = db.version(run.fingerprint)
        if held is None or held["version"] != version:
            held = {"fingerprint": run.fingerprint, "version": version, "items": db.current(run.fingerprint)}
            st.session_state[DECISIONS_KEY] = held
        st.session_state[_READ_PROBLEM] = f"Label decisions cannot be saved: {db.problem}" if db.problem else ""
    except InputError as exc:
        st.session_state[_READ_PROBLEM] = f"Label decisions cannot be read: {exc}"
    return held["items"] if held else {}


def decision_problems() -> list[str]:
    """Why decisions cannot be read or were not saved (shown once), for st.error."""
    return [m for m in (st.session_state.get(_READ_PROBLEM), st.session_state.pop(_WRITE_PROBLEM, None)) if m]


def record_decisions(run: backend.Run, changes: dict, seen: Optional[dict] = None) -> Optional[Batch]:
    """Store {sample id: decision or None (clear)} as one step of this session's reviewer. seen: {sample id: the
    decision the page showed}; a sample decided otherwise meanwhile is left alone and noted. A failure is kept
    for decision_problems()."""
    try:
        batch = store(run).record(run.fingerprint, changes, who=reviewer(), expect=seen)
    except InputError as exc:
        st.session_state[_WRITE_PROBLEM] = f"Not saved: {exc}"
        return None
    st.session_state[_NOTE] = batch
    return batch


def record_decision(run: backend.Run, sample_id: str, decision: Optional[str], seen: Optional[str] = None) -> None:
    """Store one decision (None clears it) on a sample the page showed with decision `seen`."""
    record_decisions(run, {str(sample_id): decision}, {str(sample_id): seen})


def pop_recorded() -> Optional[Batch]:
    """The last step this session recorded (once), to say what it did."""
    return st.session_state.pop(_NOTE, None)


def last_step(run: backend.Run) -> Optional[Batch]:
    """This reviewer's last step on the dataset that undo_last_step would revert."""
    try:
        return store(run).last_batch(run.fingerprint, reviewer())
    except InputError:
        return None       # decisions() already reports the cause


def undo_last_step(run: backend.Run) -> Optional[Undone]:
    try:
        undone = store(run).undo(run.fingerprint, who=reviewer())
    except InputError as exc:
        st.session_state[_WRITE_PROBLEM] = f"Not undone: {exc}"
        return None
    st.session_state[_UNDONE] = undone
    return undone


def pop_undone() -> Optional[Undone]:
    """What the last undo of this session did (once)."""
    return st.session_state.pop(_UNDONE, None)


def history(run: backend.Run, sample_ids) -> dict[str, list[Event]]:
    """The last few decisions on each of these samples, newest first ({} when they cannot be read)."""
    try:
        return store(run).history(run.fingerprint, sample_ids)
    except InputError:
        return {}


# ----------------------------------------------------------------------------------------- selection
def current_selection(run: backend.Run) -> tuple[np.ndarray, Optional[str]]:
    """(mask, error): the subset for this user's settings and decisions. When the settings cannot be met
    (e.g. more samples asked than candidates left), mask is all False and error says why."""
    chosen = selection(run)
    memo_key = (run.key, chosen)
    memo = st.session_state.get(_MEMO_KEY)
    if memo and memo[0] == memo_key:
        return memo[1], memo[2]
    try:
        mask, error = selection_mask(run.table, chosen), None
    except InputError as exc:
        mask, error = np.zeros(len(run.table), dtype=bool), str(exc)
        n_dup = int((run.table["duplicate_of"].to_numpy() >= 0).sum())
        if chosen.exclude_duplicates and n_dup:
            error += (f" {n_dup:,} samples are marked near-duplicates: 'Exclude near-duplicates' on the Selection "
                      "page keeps them as candidates.")
    st.session_state[_MEMO_KEY] = (memo_key, mask, error)
    return mask, error
