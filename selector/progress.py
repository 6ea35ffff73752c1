"""Progress reporting: the engine calls a callback, only the CLI and the UI draw bars."""
from typing import Callable, Optional

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): e.g. ("embedding images", 4096, 60000)."""


def null_progress(stage: str, done: int, total: int) -> None:
    """The default callback: report nothing."""


def ensure(progress: Optional[Progress]) -> Progress:
    return progress if progress is not None else null_progress
