"""Pooled statistics from sufficient statistics, quantiles from histograms, Welch's t-test.

Pure ``math``: the hub needs no numerical library for a mean, a variance, a histogram
quantile and Student's t distribution (through the regularized incomplete beta function,
evaluated by its continued fraction as in Numerical Recipes, 6.4).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from common.schemas.cohort import GroupStatistic


@dataclass(frozen=True)
class Pooled:
    """One group across nodes: n, mean, sample variance, and the combined histogram."""

    n: int
    total: float
    total_squares: float
    bin_edges: tuple[float, ...]
    histogram: tuple[int, ...]  # published bin counts added up (withheld bins: 0)
    histogram_complete: bool  # False when some node withheld a bin
    nodes: int

    @property
    def mean(self) -> float:
        return self.total / self.n

    @property
    def variance(self) -> float:
        """The sample variance (n - 1 in the denominator)."""
        if self.n < 2:
            return math.nan
        return max(self.total_squares - self.n * self.mean**2, 0.0) / (self.n - 1)

    def quantile(self, q: float) -> float:
        return histogram_quantile(self.bin_edges, self.histogram, q)


def pool(groups: Iterable[GroupStatistic], bin_edges: Sequence[float]) -> Pooled:
    """Add up the published groups' sufficient statistics (withheld ones are left out)."""
    n, total, squares, nodes = 0, 0.0, 0.0, 0
    bins = [0] * max(len(bin_edges) - 1, 0)
    complete = True
    for group in groups:
        if group.withheld is not None or group.n is None:
            continue
        nodes += 1
        n += group.n
        total += group.sum or 0.0
        squares += group.sum_squares or 0.0
        for index, count in enumerate(group.histogram[: len(bins)]):
            if count.value is None:
                complete = False
            else:
                bins[index] += count.value
    return Pooled(n, total, squares, tuple(bin_edges), tuple(bins), complete, nodes)


def histogram_quantile(edges: Sequence[float], counts: Sequence[int], q: float) -> float:
    """The ``q`` quantile, interpolating linearly inside the bin where it falls."""
    if not 0 <= q <= 1:
        raise ValueError("a quantile lies between 0 and 1")
    whole = sum(counts)
    if whole == 0:
        return math.nan
    target = q * whole
    below = 0.0
    for index, count in enumerate(counts):
        if count and below + count >= target:
            fraction = (target - below) / count
            return edges[index] + fraction * (edges[index + 1] - edges[index])
        below += count
    return edges[-1]


# -- Student's t and Welch's test ------------------------------------------------------------

_EPSILON = 3e-14
_TINY = 1e-300
_MAX_ITERATIONS = 300


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        step = d * c
        h *= step
        if abs(step - 1.0) < _EPSILON:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1) / (a + b + 2):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))


@dataclass(frozen=True)
class WelchTest:
    t: float
    df: float
    p: float  # two-sided
    mean_difference: float


def welch(first: Pooled, second: Pooled) -> WelchTest:
    """Welch's unequal-variance t-test of ``first.mean - second.mean``."""
    if first.n < 2 or second.n < 2:
        raise ValueError("each group needs at least two values")
    a = first.variance / first.n
    b = second.variance / second.n
    difference = first.mean - second.mean
    if a + b == 0:
        raise ValueError("both groups have no variance")
    t = difference / math.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / (first.n - 1) + b**2 / (second.n - 1))
    return WelchTest(t=t, df=df, p=t_two_sided_p(t, df), mean_difference=difference)
