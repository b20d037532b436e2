"""Small-cell suppression with complementary suppression (DESIGN.md, decision 7).

A cell is *primarily* suppressed when it counts fewer patients than the threshold. A
suppressed cell could still be recovered by subtraction wherever a total over cells that
contain it is known — from another table, a federated count, or the node's size. So for
every *group* of cells whose total may be known, the cells withheld inside it must be none,
or at least two that together count at least the threshold; otherwise the smallest
published cell of the group is withheld as well (*complementary* suppression), until
every group holds. Withholding only grows, so this ends; ties go by key, so the same
counts always withhold the same cells.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def suppress(counts: Mapping[K, int], threshold: int, groups: Iterable[Sequence[K]]) -> set[K]:
    """The keys of ``counts`` to withhold so that no group reveals a count below threshold."""
    members = [list(group) for group in groups]
    groups_of: dict[K, list[int]] = defaultdict(list)
    for index, group in enumerate(members):
        for key in group:
            groups_of[key].append(index)
    withheld: set[K] = set()
    hidden_cells = [0] * len(members)
    hidden_sum = [0] * len(members)

    def withhold(key: K) -> None:
        withheld.add(key)
        for index in groups_of[key]:
            hidden_cells[index] += 1
            hidden_sum[index] += counts[key]

    for key, count in counts.items():
        if count < threshold:
            withhold(key)
    # Each group's published cells, largest first, so the smallest pops off the end.
    published = [
        sorted(((counts[k], repr(k), k) for k in group if k not in withheld), reverse=True)
        for group in members
    ]
    pending = sorted({i for key in withheld for i in groups_of[key]})
    while pending:
        index = heapq.heappop(pending)
        while hidden_cells[index] and (hidden_cells[index] < 2 or hidden_sum[index] < threshold):
            candidates = published[index]
            while candidates and candidates[-1][2] in withheld:
                candidates.pop()
            if not candidates:  # all of the group is withheld: nothing left to subtract from
                break
            key = candidates.pop()[2]
            withhold(key)
            for other in groups_of[key]:
                if other != index:
                    heapq.heappush(pending, other)
    return withheld


def rounded(count: int, base: int) -> int:
    """``count`` to the nearest multiple of ``base`` (halves up)."""
    if base <= 1:
        return count
    return ((count + base // 2) // base) * base
