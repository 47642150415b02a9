"""Performance and data profiles against examples worked by hand (Dolan-Moré 2002, Moré-Wild 2009)."""
import math

import numpy as np
import pytest

from runner.report.profiles import breakpoints, data_profile, performance_profile, performance_ratios

INF = math.inf

# Two solvers A, B on four problems. Worked by hand:
#   p1: A 1, B 2   -> ratios A 1, B 2
#   p2: A 3, B 3   -> a tie: both 1
#   p3: A fails, B 4 -> A inf, B 1
#   p4: both fail  -> inf, inf (counts against both)
COSTS = [[1, 2], [3, 3], [INF, 4], [INF, INF]]


def test_ratios_with_a_tie_a_failure_and_an_unsolved_problem():
    r = performance_ratios(COSTS)
    assert r.tolist() == [[1, 2], [1, 1], [INF, 1], [INF, INF]]


def test_performance_profile_by_hand():
    rho = performance_profile(COSTS, [1, 1.5, 2, 100])
    # A: p1, p2 at tau = 1 and never more (p3, p4 unsolved): 2/4 everywhere.
    # B: p2, p3 at tau = 1; p1 joins at tau = 2; p4 never: 2/4, 2/4, 3/4, 3/4.
    assert rho[:, 0].tolist() == [0.5, 0.5, 0.5, 0.5]
    assert rho[:, 1].tolist() == [0.5, 0.5, 0.75, 0.75]


def test_data_profile_by_hand():
    d = data_profile(COSTS, [0.5, 1, 2, 3, 4, 1e9])
    # A solves p1 with 1, p2 with 3. B solves p1 with 2, p2 with 3, p3 with 4.
    assert d[:, 0].tolist() == [0, 0.25, 0.25, 0.5, 0.5, 0.5]
    assert d[:, 1].tolist() == [0, 0, 0.25, 0.5, 0.75, 0.75]


def test_a_single_solver_is_always_the_best_where_it_solves():
    costs = [[5], [INF], [7], [2]]
    assert performance_ratios(costs).ravel().tolist() == [1, INF, 1, 1]
    rho = performance_profile(costs, [1, 10, 1e6])
    assert rho.ravel().tolist() == [0.75, 0.75, 0.75]  # the share it solved, whatever tau
    assert data_profile(costs, [1, 2, 5, 7]).ravel().tolist() == [0, 0.25, 0.5, 0.75]


def test_three_way_tie_and_ratios_scale_free():
    costs = np.array([[4.0, 4.0, 4.0], [1.0, 10.0, 100.0]])
    r = performance_ratios(costs)
    assert r.tolist() == [[1, 1, 1], [1, 10, 100]]
    np.testing.assert_array_equal(performance_ratios(costs * 3.7), r)  # seconds or steps: same profile


def test_zero_cost_ties_rank_first():
    # Solved at no cost (the start already met the target): a tie among zeros; a positive cost
    # beside a zero has no finite ratio.
    r = performance_ratios([[0, 0, 5], [0, 2, INF]])
    assert r.tolist() == [[1, 1, INF], [1, INF, INF]]


def test_no_problems_and_bad_tables():
    assert performance_profile(np.zeros((0, 2)), [1, 2]).shape == (2, 2)
    with pytest.raises(ValueError, match="problems, solvers"):
        performance_ratios([1, 2, 3])
    with pytest.raises(ValueError, match=">= 0"):
        performance_ratios([[-1, 2]])
    with pytest.raises(ValueError, match="inf for a problem"):
        data_profile([[math.nan, 2]], [1])


def test_breakpoints_are_the_distinct_finite_values():
    assert breakpoints([[1, 2], [2, INF], [0.5, 3]], 1.0).tolist() == [1, 2, 3]
