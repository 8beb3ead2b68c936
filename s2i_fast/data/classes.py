"""Class selection and lookup, the one place for both.

    parse_class_spec("5")         -> 5            the first five classes (sorted)
    parse_class_spec("cat,dog")   -> ["cat", "dog"]
    parse_class_spec(None or "")  -> None         all classes
    resolve_class("dog", names)   -> its id; resolve_class("3", names) or (3, names) -> 3

Only ASCII digits make an id ("²" is a class name that is not known, not the number 2).
"""

from __future__ import annotations

from collections.abc import Sequence

from s2i_fast.errors import UnknownClassError

MAX_SHOWN = 12


def _is_decimal(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_class_spec(text: str | None) -> list[str] | int | None:
    """A class subset from the command line: a count, comma-separated names, or None (all)."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if _is_decimal(text):
        return int(text)
    return [c.strip() for c in text.split(",") if c.strip()]


def known_classes(class_names: Sequence[str]) -> str:
    shown = ", ".join(class_names[:MAX_SHOWN])
    return shown + (", ..." if len(class_names) > MAX_SHOWN else "")


def resolve_class(value: str | int, class_names: Sequence[str]) -> int:
    """A class name or id -> the id; UnknownClassError naming the known classes otherwise."""
    names = list(class_names)
    k = len(names)
    if isinstance(value, str):
        if value in names:
            return names.index(value)
        if not _is_decimal(value):
            raise UnknownClassError(f"unknown class {value!r}; this model knows: "
                                    f"{known_classes(names)}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnknownClassError(f"a class must be a name (str) or an id (int), got {value!r}")
    if not 0 <= value < k:
        raise UnknownClassError(f"class id {value} out of range: this model has {k} classes "
                                f"(0..{k - 1})")
    return value
