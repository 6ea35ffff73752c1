"""CLIP-powered data selection: embed a labelled image dataset, audit its labels, pick a subset.

The engine never imports streamlit; heavy dependencies are imported where they are used.
"""
from selector.errors import InputError, OfflineError

__version__ = "0.1.0"
__all__ = ["InputError", "OfflineError", "__version__"]
