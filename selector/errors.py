"""Errors a user can act on. Their messages say what was expected, what was found and how to fix it."""


class InputError(ValueError):
    """Bad user input: a file, a column, a label, an array or a setting that cannot be used as given."""


class OfflineError(RuntimeError):
    """Something needs a network that is not there (model weights, a dataset download)."""


def describe_rows(rows, limit: int = 5) -> str:
    """'rows 3, 17, 42 and 12 more' - a short list of offending rows or files for an error message."""
    rows = [str(r) for r in rows]
    head = ", ".join(rows[:limit])
    more = len(rows) - limit
    return f"{head} and {more} more" if more > 0 else head
