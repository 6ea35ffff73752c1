"""Small registries of named choices: the only lists of names in the project.

Every choice a user can make by name (a data source, an encoder, a selection strategy, a map, a noise mode,
an objective, a label decision) is one `Choice` in one `Registry`, with the label and help text the CLI and
the app show. argparse `choices=` and the app's select boxes read `names()`; an unknown name is an
InputError that lists the valid ones (open_clip's `list_models()` habit).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from selector.errors import InputError


@dataclass(frozen=True)
class Choice:
    """One named choice. value: what the name stands for (a loader, a factory, a column name, ...)."""
    name: str
    label: str
    help: str = ""
    value: Any = None


class Registry:
    """An ordered, read-only-after-import mapping name -> Choice (or a subclass of it)."""

    def __init__(self, kind: str, *choices: Choice):
        self.kind = kind
        self._choices: dict[str, Choice] = {}
        for choice in choices:
            self.add(choice)

    def add(self, choice: Choice) -> Choice:
        if choice.name in self._choices:
            raise ValueError(f"{self.kind} {choice.name!r} is registered twice")
        self._choices[choice.name] = choice
        return choice

    def names(self) -> list[str]:
        return list(self._choices)

    def get(self, name) -> Choice:
        """The choice called `name`; InputError listing the valid names when there is none."""
        try:
            return self._choices[name]
        except (KeyError, TypeError):
            raise InputError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self._choices)}.") from None

    def check(self, name) -> str:
        """`name` when it is registered, else the InputError of `get`."""
        return self.get(name).name

    def label(self, name) -> str:
        return self.get(name).label

    def labels(self) -> dict[str, str]:
        return {c.name: c.label for c in self}

    def __contains__(self, name) -> bool:
        return name in self._choices

    def __iter__(self) -> Iterator[Choice]:
        return iter(self._choices.values())

    def __len__(self) -> int:
        return len(self._choices)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._choices)})"
