"""One small generic registry, used by every family (teachers, students, datasets, losses, methods).

Usage::

    TEACHERS = Registry("teacher")

    @TEACHERS.register("litemedsam", input_size=256)
    def build_litemedsam(...): ...

    TEACHERS.get("litemedsam")  # -> the builder; an unknown name lists the valid ones
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from samdistill.errors import UserError

T = TypeVar("T", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        doc = (self.obj.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


class Registry(Generic[T]):
    """A name -> object mapping filled by a decorator, with metadata kept next to each entry."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name=name, obj=obj, meta=dict(meta))
            return obj

        return decorator

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(self.unknown_message(name)) from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid: {', '.join(self.names())}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
