"""The Streamlit glue: the cached backend shared by sessions, per-session state, shared widgets.

Pages import from here (and plain selector functions) only. `selection_view` and `decisions` hold the
page logic as plain, unit-tested functions and never import streamlit; `backend`, `state` and `widgets` do.
"""
