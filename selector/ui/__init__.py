"""The Streamlit glue, the only layer the pages import (the engine never imports it or streamlit).

`backend` holds the runs every browser session shares, `state` one session's settings and reviewer name (and
reads and writes the dataset's shared label decisions), `widgets` the pieces several pages draw. `views` and `charts` hold the page logic as plain, unit-tested
functions over the engine's table; they never import streamlit.
"""
