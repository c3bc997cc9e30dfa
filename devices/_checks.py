"""Input checks shared by the modules of ``devices``: each raises ``ValueError`` naming the field.

Every check accepts a Python scalar or a numpy array and passes only when *every* element
satisfies it. Conditions are written in the positive form (``x >= 0``), so NaN fails them.
Python ``int``/``float`` take a fast path: the checks run once per sampled device.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

_SCALAR = (int, float)


def _fail(name: str, requirement: str, value: Any) -> None:
    raise ValueError(f"{name} must be {requirement}, got {value!r}")


def _check(name: str, value: Any, requirement: str,
           scalar_ok: Callable[[float], bool], array_ok: Callable[[np.ndarray], Any]) -> None:
    if type(value) in _SCALAR:
        if not scalar_ok(value):
            _fail(name, requirement, value)
        return
    try:
        v = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        _fail(name, f"a number ({requirement})", value)
    if not np.all(array_ok(v)):
        _fail(name, requirement, value)


def check_finite(name: str, value: Any) -> None:
    """``value`` is finite (any sign)."""
    _check(name, value, "finite", math.isfinite, np.isfinite)


def check_finite_nonneg(name: str, value: Any) -> None:
    """``value`` is finite and ``>= 0``."""
    _check(name, value, "finite and >= 0", lambda x: 0 <= x < math.inf,
           lambda v: np.isfinite(v) & (v >= 0))


def check_nonneg(name: str, value: Any) -> None:
    """``value >= 0`` (``+inf`` allowed)."""
    _check(name, value, ">= 0", lambda x: x >= 0, lambda v: v >= 0)


def check_positive(name: str, value: Any) -> None:
    """``value`` is finite and ``> 0``."""
    _check(name, value, "finite and > 0", lambda x: 0 < x < math.inf,
           lambda v: np.isfinite(v) & (v > 0))


def check_unit_open_closed(name: str, value: Any) -> None:
    """``0 < value <= 1``."""
    _check(name, value, "in (0, 1]", lambda x: 0 < x <= 1, lambda v: (v > 0) & (v <= 1))


def check_unit_closed(name: str, value: Any) -> None:
    """``0 <= value <= 1``."""
    _check(name, value, "in [0, 1]", lambda x: 0 <= x <= 1, lambda v: (v >= 0) & (v <= 1))


def check_unit_closed_open(name: str, value: Any) -> None:
    """``0 <= value < 1``."""
    _check(name, value, "in [0, 1)", lambda x: 0 <= x < 1, lambda v: (v >= 0) & (v < 1))


def check_int_at_least(name: str, value: Any, lowest: int) -> None:
    """``value`` is a Python or numpy integer (not a bool) and ``>= lowest``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
        _fail(name, f"an integer >= {lowest}", value)


def check_sources(sources: Any, figures: frozenset[str]) -> None:
    """``sources`` maps exactly the names in ``figures`` to non-empty citation strings."""
    if not hasattr(sources, "keys"):
        raise ValueError(f"sources must be a mapping of field name to citation, got {sources!r}")
    missing = sorted(figures - set(sources))
    unknown = sorted(set(sources) - figures)
    if missing or unknown:
        raise ValueError(f"sources must cite exactly the numeric fields: missing {missing}, "
                         f"unknown {unknown}")
    for key, text in sources.items():
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"sources[{key!r}] must be non-empty citation text")


def scalar_or_array(x: Any) -> Any:
    """A 0-d result as a Python float, anything else unchanged."""
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else a
