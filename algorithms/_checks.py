"""Argument checks shared by the algorithms (torch-free): each raises ValueError naming the field."""

from __future__ import annotations

from typing import Iterable

__all__ = ["positive_int", "non_negative_int", "positive_float", "density", "choice"]


def positive_int(field: str, value: object) -> int:
    """``value`` if it is an int >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} must be a positive int, got {value!r}")
    return value


def non_negative_int(field: str, value: object) -> int:
    """``value`` if it is an int >= 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field} must be a non-negative int, got {value!r}")
    return value


def density(field: str, value: object) -> float:
    """``value`` as a float if it lies in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"{field} must be in (0, 1], got {value!r}")
    return float(value)


def choice(field: str, value: object, valid: Iterable[str]) -> str:
    """``value`` if it is one of ``valid``."""
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"{field} must be one of {', '.join(valid)}, got {value!r}")
    return value  # type: ignore[return-value]


def positive_float(field: str, value: object) -> float:
    """``value`` as a float if it is a finite number > 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < float("inf"):
        raise ValueError(f"{field} must be a positive number, got {value!r}")
    return float(value)
