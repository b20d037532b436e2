"""Small-cell suppression: attacks by subtraction must never recover a withheld cell."""

from __future__ import annotations

import itertools
import random

import pytest

from node.catalogue.suppression import rounded, suppress

T = 10


def recoverable(counts: dict[str, int], withheld: set[str], groups: list[list[str]]) -> list[str]:
    """What an attacker who knows every group's true total can pin down exactly:
    a group with one withheld cell gives it away; a group whose withheld cells sum below
    the threshold shows that a small population is there. A total below the threshold is
    itself never published (by anyone obeying the same rule), so it is not known."""
    leaks = []
    for group in groups:
        if sum(counts[k] for k in group) < T:
            continue
        hidden = [k for k in group if k in withheld]
        if len(hidden) == 1 or (hidden and sum(counts[k] for k in hidden) < T):
            leaks.append("+".join(sorted(hidden)))
    return leaks


def test_a_cell_below_the_threshold_is_withheld_and_one_at_it_is_not() -> None:
    counts = {"a": 9, "b": 10, "c": 40, "d": 50}
    withheld = suppress(counts, T, [])
    assert withheld == {"a"}


def test_a_lone_small_cell_in_a_known_total_takes_the_smallest_other_with_it() -> None:
    counts = {"a": 3, "b": 12, "c": 40}
    groups = [list(counts)]
    withheld = suppress(counts, T, groups)
    assert withheld == {"a", "b"}  # total - b - c would give a alone
    assert recoverable(counts, withheld, groups) == []


def test_two_small_cells_that_sum_below_the_threshold_are_not_enough() -> None:
    counts = {"a": 2, "b": 3, "c": 11, "d": 30}
    groups = [list(counts)]
    withheld = suppress(counts, T, groups)
    assert withheld == {"a", "b", "c"}
    assert recoverable(counts, withheld, groups) == []


def test_a_group_with_nothing_withheld_stays_whole() -> None:
    counts = {"a": 10, "b": 11}
    assert suppress(counts, T, [list(counts)]) == set()


def test_complementary_suppression_spreads_across_overlapping_groups() -> None:
    # A 2-D table (rows x columns) whose row and column totals are known.
    counts = {
        "r1c1": 4, "r1c2": 30, "r1c3": 25,
        "r2c1": 20, "r2c2": 15, "r2c3": 50,
        "r3c1": 35, "r3c2": 12, "r3c3": 18,
    }  # fmt: skip
    rows = [[f"r{r}c{c}" for c in range(1, 4)] for r in range(1, 4)]
    columns = [[f"r{r}c{c}" for r in range(1, 4)] for c in range(1, 4)]
    groups = [list(counts), *rows, *columns]
    withheld = suppress(counts, T, groups)
    assert "r1c1" in withheld
    assert recoverable(counts, withheld, groups) == []


@pytest.mark.parametrize("seed", range(40))
def test_random_cubes_leak_nothing_by_subtraction(seed: int) -> None:
    rng = random.Random(seed)
    sizes = (rng.randint(2, 5), rng.randint(2, 4), rng.randint(1, 3))
    counts = {
        "-".join(map(str, cell)): rng.choice([1, 2, 3, 5, 8, 9, 10, 12, 20, 60])
        for cell in itertools.product(*(range(n) for n in sizes))
    }
    groups: list[list[str]] = [list(counts)]
    for axis, size in enumerate(sizes):
        for value in range(size):
            groups.append([k for k in counts if k.split("-")[axis] == str(value)])
    withheld = suppress(counts, T, groups)
    assert {k for k, n in counts.items() if n < T} <= withheld
    assert recoverable(counts, withheld, groups) == []
    assert suppress(dict(reversed(counts.items())), T, groups) == withheld  # deterministic


def test_counts_round_to_the_nearest_multiple() -> None:
    assert [rounded(n, 5) for n in (10, 12, 13, 15, 17)] == [10, 10, 15, 15, 15]
    assert rounded(13, 1) == 13
