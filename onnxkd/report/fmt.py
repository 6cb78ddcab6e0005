"""Number formatting shared by the markdown, HTML and terminal renderers (one style everywhere)."""

from __future__ import annotations

DASH = "—"


def count(value: int | float | None) -> str:
    """1234567 -> '1.23 M' (MACs, params)."""
    if value is None:
        return DASH
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:,.0f}"


def size(value: int | None) -> str:
    """Bytes in decimal units, as quantize's summary and disk tools show them (2,416,565,585 bytes: 2.42 GB)."""
    if value is None:
        return DASH
    for unit, scale in (("GB", 10 ** 9), ("MB", 10 ** 6), ("kB", 10 ** 3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


def ms(value: float | None) -> str:
    if value is None:
        return DASH
    if value < 0.1:
        return f"{value * 1000:.1f} µs"
    return f"{value:.3g} ms" if value < 100 else f"{value:,.0f} ms"


def pct(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value * 100:.{digits}f}%"


def points(value: float | None, unit: bool = True) -> str:
    """An accuracy difference in percentage points, signed (+ 0.0 turns -0.0 into 0.0)."""
    if value is None:
        return DASH
    return f"{value * 100 + 0.0:+.2f} pts" if unit else f"{value * 100 + 0.0:+.1f}"


def ratio(value: float | None) -> str:
    return ratio_digits(value)


def ratio_digits(value: float | None, digits: int = 2) -> str:
    return DASH if value is None else f"{value:.{digits}f}x"


def ci(bounds: list | None, style=ratio) -> str:
    if not bounds or bounds[0] is None:
        return ""
    return f"[{style(bounds[0])}, {style(bounds[1])}]"


def num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return DASH
    return f"{value:.{digits}g}"


def rate(value: float | None) -> str:
    return DASH if value is None else f"{value:,.0f}/s"
