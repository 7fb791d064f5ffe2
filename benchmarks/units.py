"""One formatting helper per unit, shared by every summary table and by ``compare``'s table.

Each takes a number or a summary from ``harness.summ`` (``{"median", "min", "max", "n"}``) and
returns the text without its unit (the column or row header names the unit): ``-`` for a missing
value; for a summary the median, then ``(min-max)`` when it came from more than one run and
``spread`` is on.
"""
from __future__ import annotations

from typing import Any, Callable

Value = float | int | dict[str, Any] | None


def _text(value: Value, one: Callable[[float], str], spread: bool) -> str:
    if value is None:
        return "-"
    if not isinstance(value, dict):
        return one(value)
    text = one(value["median"])
    if spread and value.get("n", 2) > 1:
        text += f" ({one(value['min'])}-{one(value['max'])})"
    return text


def ms(value: Value, spread: bool = True) -> str:
    """Seconds shown in milliseconds: ``0.281``."""
    return _text(value, lambda v: f"{v * 1e3:.3f}", spread)


def us(value: Value, spread: bool = True) -> str:
    """Microseconds, as results store a cost per file (``us_per_file``): ``10.84``."""
    return _text(value, lambda v: f"{v:.2f}", spread)


def seconds(value: Value, spread: bool = True) -> str:
    """Seconds: ``6.925``."""
    return _text(value, lambda v: f"{v:.4g}", spread)


def rate(value: Value, spread: bool = True) -> str:
    """Per second (files/s): ``92,234``, or three digits below 100."""
    return _text(value, lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.3g}", spread)


def mib(value: Value, spread: bool = True) -> str:
    """MiB: ``24.7``."""
    return _text(value, lambda v: f"{v:.1f}", spread)


def kib(value: Value, spread: bool = True) -> str:
    """KiB: ``15.82``."""
    return _text(value, lambda v: f"{v:.2f}", spread)


def count(value: Value, spread: bool = True) -> str:
    """A count (switches, workers, files): ``1,742``."""
    return _text(value, lambda v: f"{v:,.0f}", spread)


def ratio(value: Value, spread: bool = True) -> str:
    """A ratio near 1 (efficiency): ``0.9869``."""
    return _text(value, lambda v: f"{v:.4f}", spread)


def factor(value: Value, spread: bool = True) -> str:
    """How many times a limit: ``1.14x``."""
    return _text(value, lambda v: f"{v:.2f}x", spread)
