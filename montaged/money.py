"""Dollar amounts for people: as many decimals as the fraction of a cent that matters.

Cloud speech costs fractions of a cent per minute, so a fixed ``.2f`` prints a $0.001 cap as
"$0.00" and a fixed ``.4f`` hides a $0.00003 call; two significant digits below a dime do neither.
"""

from __future__ import annotations

import math

_MAX_DECIMALS = 6  # a micro-dollar: below it, amounts are rounding noise of float sums


def usd(amount: float) -> str:
    """``$1.50``, ``$0.25``, ``$0.015``, ``$0.001``, ``$0.0000012`` → ``$0.000001``; never "$-0.00"."""
    if amount != amount:  # NaN: say so rather than print a number
        return "$nan"
    if amount < 0:
        return "-" + usd(-amount)
    decimals = 2
    if 0 < amount < 0.1:  # two significant digits of a sub-dime amount
        decimals = min(_MAX_DECIMALS, max(2, 1 - math.floor(math.log10(amount))))
    whole, _, frac = f"{amount:,.{decimals}f}".partition(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"${whole}.{frac}"
