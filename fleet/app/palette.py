"""One colour per device class, variant and dropout cause, the same in every figure.

A device class's colour is keyed on its place in the catalog (``devices.catalog.DEVICE_CLASSES``), never on
the subset a figure happens to show, so ``esp32`` is the same green in ``completion_cdf.png``,
``comparison.png`` and ``comparison_costs.png``. The twelve class colours are drawn from Paul Tol's qualitative
schemes (made to stay apart under the common colour-vision deficiencies) and Okabe and Ito's (orange,
vermillion), chosen so that every pair is at least 15 CIELAB units apart (CIE76) for normal vision and
under simulated deuteranopia and protanopia (Machado et al. 2009, full severity); the test holds that.
Classes of one family (the two MCUs, the two ESP32s, the Raspberry Pis, the Jetsons, the phones) get unlike
hues so that they never read as one. Twelve colours cannot all stay far apart for every reader: figures
that show classes also name them (legend or tick labels).

Colours are matplotlib colour strings (``"#rrggbb"``); nothing here imports matplotlib.
"""

from __future__ import annotations

import colorsys
import zlib
from typing import Sequence

from devices.catalog import DEVICE_CLASSES
from fleet.core.messages import CAUSES

__all__ = ["CAUSE_COLOURS", "CLASS_COLOURS", "FALLBACK_COLOURS", "VARIANT_COLOURS", "VARIANT_MARKERS",
           "cause_colours", "class_colours", "class_order", "variant_colours", "variant_markers"]

# In catalog order: mcu_tiny, mcu_mid, esp32, esp32_s3_psram, rpi_zero2w, rpi4_2gb, rpi4_4gb, jetson_nano,
# jetson_orin_nano, phone_low, phone_mid, phone_high.
_CLASS_HEX = ("#332288", "#88CCEE", "#117733", "#DDCC77", "#CC6677", "#882255", "#E69F00", "#44AA99",
              "#6699CC", "#AA4499", "#661100", "#D55E00")
#: Every catalog class's colour (a test fails when the catalog gains a class this list lacks).
CLASS_COLOURS: dict[str, str] = dict(zip(DEVICE_CLASSES, _CLASS_HEX))

#: For names outside the catalog (a hand-made fleet in a test, a class added later): none of these is a
#: catalog class's colour.
FALLBACK_COLOURS = ("#000000", "#777777", "#56B4E9", "#009E73", "#CC79A7", "#EE7733", "#BBBBBB", "#999933")

#: Okabe and Ito's colours for lines of variants, in the order variants are listed (black for the 7th:
#: their yellow is unreadable as a thin line on white).
VARIANT_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
#: One marker per variant, so that variants stay apart in greyscale and beyond seven colours.
VARIANT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

#: One colour per dropout cause (Paul Tol's "bright" scheme: seven colours for the seven causes).
CAUSE_COLOURS: dict[str, str] = dict(zip(CAUSES, ("#4477AA", "#EE6677", "#BBBBBB", "#CCBB44", "#66CCEE",
                                                 "#AA3377", "#228833")))


def _generated(i: int) -> str:
    """The ``i``-th colour after the fallback list: hues a golden angle apart, mid lightness."""
    r, g, b = colorsys.hls_to_rgb((0.11 + i * 0.381966) % 1.0, 0.45, 0.65)
    return f"#{round(r * 255):02X}{round(g * 255):02X}{round(b * 255):02X}"


def class_colours(class_names: Sequence[str]) -> dict[str, str]:
    """A colour for each of ``class_names``, distinct within the call.

    A catalog class always gets ``CLASS_COLOURS[name]``, whatever else is asked. Other names get a fallback
    colour chosen by a CRC-32 of the name (so the same name tends to keep its colour across figures),
    moving on to the next free one when that is taken in this call; past the fallback list, generated hues.
    Deterministic: the same names give the same colours, in any order.
    """
    out = {n: CLASS_COLOURS[n] for n in class_names if n in CLASS_COLOURS}
    taken = set(out.values())
    for name in sorted(set(class_names) - set(out)):
        start = zlib.crc32(name.encode())
        free = [FALLBACK_COLOURS[(start + k) % len(FALLBACK_COLOURS)] for k in range(len(FALLBACK_COLOURS))]
        free = [c for c in free if c not in taken]
        k = 0
        while not free:
            free = [c for c in (_generated(k),) if c not in taken]
            k += 1
        out[name] = free[0]
        taken.add(free[0])
    return {n: out[n] for n in class_names}


def variant_colours(variant_names: Sequence[str]) -> dict[str, str]:
    """A colour per variant in the order given (the scenario's order), cycling after seven; pair with
    ``variant_markers`` so that variants beyond the seventh stay apart."""
    return {n: VARIANT_COLOURS[i % len(VARIANT_COLOURS)] for i, n in enumerate(variant_names)}


def variant_markers(variant_names: Sequence[str]) -> dict[str, str]:
    """A marker per variant in the order given, cycling after eight (with seven colours, the first
    repeated (colour, marker) pair is the 57th variant)."""
    return {n: VARIANT_MARKERS[i % len(VARIANT_MARKERS)] for i, n in enumerate(variant_names)}


def cause_colours(causes: Sequence[str]) -> dict[str, str]:
    """The colour of each dropout cause (``fleet.core.messages.CAUSES``); an unknown cause gets a grey."""
    return {c: CAUSE_COLOURS.get(c, "#777777") for c in causes}


def class_order(class_names: Sequence[str]) -> list[str]:
    """``class_names`` without repeats in catalog order (small devices first), unknown names after, sorted; the
    order every figure and legend lists classes in."""
    rank = {n: i for i, n in enumerate(DEVICE_CLASSES)}
    return sorted(set(class_names), key=lambda n: (rank.get(n, len(rank)), n))
