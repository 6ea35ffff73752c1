"""selector: embed a labelled image dataset, audit its labels, and pick the subset that trains best.

Five lines from a notebook (see the README)::

    import selector
    data = selector.open_source("embeddings", path="embedded.npz")
    result = selector.load_or_run(data, selector.open_encoder("precomputed"), selector.Config(map="none"))
    table = selector.apply(result, selector.Selection(ratio=0.3))        # the per-sample table, `selected` added
    selector.export(result, selector.Selection(ratio=0.3), "subset.csv")  # the same table + a run manifest

The engine never imports streamlit (the app's glue is `selector.ui`); heavy dependencies are imported where
they are used.
"""
from selector.encoders import ENCODERS, list_encoders, open_encoder
from selector.errors import InputError, OfflineError
from selector.pipeline import Config, Result, load_or_run, run
from selector.selection import DECISIONS, Selection, apply, selection_mask
from selector.sources import SOURCES, list_sources, open_source
from selector.version import __version__
from selector.writer import export, table_bytes

__all__ = ["open_source", "list_sources", "SOURCES", "open_encoder", "list_encoders", "ENCODERS", "Config",
           "Result", "run", "load_or_run", "Selection", "DECISIONS", "apply", "selection_mask", "export",
           "table_bytes", "InputError", "OfflineError", "__version__"]
