"""Non-overlapping top-K: greedy by score, each pick excluding every window it overlaps.

Greedy rather than weighted interval scheduling on purpose: WIS maximises the *sum* of scores,
which trades the single best moment for two good neighbours; an editor wants the best moments,
each on its own. Ties break towards the earlier, then shorter, window so the result is
deterministic.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def choose_top(start: F64, end: F64, score: F64, k: int) -> list[int]:
    """Indexes of at most ``k`` pairwise non-overlapping windows, best first.

    Touching windows (one ends exactly where the next starts) do not overlap.
    """
    if k <= 0 or len(score) == 0:
        return []
    order = np.lexsort((end - start, start, -score))
    alive = np.ones(len(score), bool)
    picked: list[int] = []
    for i in order:
        if not alive[i]:
            continue
        picked.append(int(i))
        if len(picked) == k:
            break
        alive &= (end <= start[i]) | (start >= end[i])
    return picked
