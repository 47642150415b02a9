"""The loop alone: step accounting, tolerance, divergence, logged points."""
import math

import pytest
import torch

from runner.loop import optimise


def quadratic(lr=0.1, target=3.0):
    x = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([x], lr=lr)
    return x, opt, lambda: ((x - target) ** 2).sum()


def test_runs_every_step_and_logs_every_nth_point():
    x, opt, loss = quadratic()
    seen = []
    res = optimise(loss, opt, steps=95, log_every=10, check_every=7, on_points=lambda done, pts, times, costs: seen.extend(pts))
    assert res.steps == 95 and res.stop_reason == "steps"
    assert [s for s, _ in seen] == list(range(0, 95, 10))
    assert seen[0][1] == pytest.approx(18.0)  # the loss before the first update
    assert res.final_loss == pytest.approx(float(loss().detach()))
    assert torch.allclose(x, torch.full((2,), 3.0), atol=1e-5)


def test_stops_at_tolerance():
    _, opt, loss = quadratic()
    res = optimise(loss, opt, steps=10_000, tol=1e-6, check_every=5)
    assert res.stop_reason == "tol" and res.steps < 200 and res.steps % 5 == 0
    assert res.final_loss <= 1e-6


def test_divergence_stops_at_the_first_non_finite_loss_and_keeps_the_history():
    x = torch.ones(1, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.0)
    calls = [0]

    def loss():
        calls[0] += 1
        bad = calls[0] > 23  # the 24th evaluation is step 23
        return (x * (math.nan if bad else 1.0)).sum()

    seen = []
    res = optimise(loss, opt, steps=100, log_every=1, check_every=10, on_points=lambda d, p, t, c: seen.extend(p))
    assert res.stop_reason == "diverged" and res.steps == 23
    assert "nan" in res.error and "step 23" in res.error
    assert [s for s, _ in seen] == list(range(23))


def test_lbfgs_closure_and_interrupt_flushes_points():
    x = torch.zeros(3, requires_grad=True)
    opt = torch.optim.LBFGS([x], line_search_fn="strong_wolfe")
    res = optimise(lambda: ((x - 1) ** 2).sum(), opt, steps=5)
    assert res.final_loss < 1e-12

    y = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([y], lr=0.01)
    seen, n = [], [0]

    def loss():
        n[0] += 1
        if n[0] == 8:
            raise KeyboardInterrupt
        return (y - 1).square().sum()

    with pytest.raises(KeyboardInterrupt):
        optimise(loss, opt, steps=100, log_every=1, check_every=50, on_points=lambda d, p, t, c: seen.extend(p))
    assert [s for s, _ in seen] == list(range(7))


def test_fused_optimisers_are_used_where_torch_has_them_and_follow_the_same_path():
    import torch

    from runner_plugins.optimizers.torch_optim import adam, nadam, sgd
    from runner_plugins.problems.poly import Poly

    c = torch.zeros(3, requires_grad=True)
    assert adam([c]).defaults["fused"] is True and sgd([c]).defaults["fused"] is True
    assert adam([c], fused=False).defaults["fused"] is False  # the user's choice wins
    assert adam([c], foreach=True).defaults["fused"] is None
    assert nadam([c]).defaults.get("fused") is None  # torch has no fused NAdam

    problem = Poly()
    finals = []
    for fused in (True, False):
        params = problem.initial_params(torch.Generator().manual_seed(0), torch.device("cpu"), torch.float64)
        params["c"].requires_grad_(True)
        opt = adam([params["c"]], fused=fused)
        for _ in range(300):
            opt.zero_grad()
            problem.loss(params).backward()
            opt.step()
        finals.append(params["c"].detach())
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-10, atol=1e-12)


def test_evaluation_counts_adam_one_per_step():
    x = torch.tensor([3.0, -2.0], requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.1)
    seen = []
    res = optimise(lambda: ((x - 1) ** 2).sum(), opt, steps=25, log_every=1, check_every=4,
                   on_points=lambda d, p, t, c: seen.extend(zip([s for s, _ in p], c)))
    assert [s for s, _ in seen] == list(range(25))
    assert all(c == (s + 1, s + 1) for s, c in seen)  # the point of step s: the closure calls of steps 0 .. s
    assert res.evaluations == (25, 25)


def test_evaluation_counts_lbfgs_are_its_closure_calls():
    from runner_plugins.optimizers.lbfgs import LBFGS

    x = torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    calls = [0]

    def loss():
        calls[0] += 1
        return ((x - 1) ** 4).sum() + (x[0] * x[1]) ** 2

    opt = LBFGS([x], max_iter=5)
    seen = []
    counted_after_step = []
    original = opt.step

    def step(closure):
        out = original(closure)
        counted_after_step.append(calls[0])
        return out
    opt.step = step
    res = optimise(loss, opt, steps=6, log_every=1, check_every=3, on_points=lambda d, p, t, c: seen.extend(c))
    assert res.evaluations == (calls[0] - 1, calls[0] - 1)  # the loop's own final loss is not counted
    assert [c[0] for c in seen] == counted_after_step and counted_after_step[0] > 1


def test_evaluation_counts_of_an_optimiser_that_evaluates_the_problem_itself():
    from runner_plugins.optimizers.lm import LevenbergMarquardt
    from runner_plugins.problems.nist import Nist

    problem = Nist(dataset="Misra1a", start=2)
    params = {k: v.requires_grad_(True) for k, v in problem.initial_params(torch.Generator(), torch.device("cpu"), torch.float64).items()}
    opt = LevenbergMarquardt(list(params.values()), problem=problem)
    seen = []
    res = optimise(lambda: problem.loss(params), opt, steps=30, log_every=1, on_points=lambda d, p, t, c: seen.append((p, c)))
    points = [pt for p, _ in seen for pt in p]
    costs = [c for _, cs in seen for c in cs]
    assert res.evaluations == (opt.evaluations["loss"], opt.evaluations["gradient"])
    assert costs[0] == (1 + 1, 2)  # step 0: r(x0), one forward-mode Jacobian (2 parameters), one trial
    assert points[-1][1] == pytest.approx(problem.data.certified_rss, rel=1e-10)  # lm's own loss, logged


def _replica_losses(n_steps: int, replicas: int, dead: dict[int, int]) -> torch.Tensor:
    """(steps, replicas) losses with a tie, an inf and replicas that die (nan from step dead[r] on)."""
    g = torch.Generator().manual_seed(1)
    table = torch.rand(n_steps, replicas, generator=g) * 10
    table[:, 1] = table[:, 0]  # ties
    table[5, 2] = math.inf  # an inf is ignored like a nan
    for r, at in dead.items():
        table[at:, r] = math.nan
    return table


def _run_replicas(table: torch.Tensor, hand_over: float, monkeypatch, **kwargs):
    """optimise over a loss that reads the table row by row (the parameters do not matter)."""
    import runner.loop as loop

    monkeypatch.setattr(loop, "HAND_OVER_SECONDS", hand_over)
    x = torch.zeros(table.shape[1], requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.0)
    row = [0]

    def loss():
        r = table[min(row[0], len(table) - 1)]
        row[0] += 1
        return x + r

    calls = []
    res = optimise(loss, opt, on_points=lambda d, p, t, c: calls.append((d, p, t, c)), params={"x": x}, **kwargs)
    return res, calls


@pytest.mark.parametrize("hand_over", [0.0, 1e9])
def test_replica_points_are_each_logged_steps_median_and_band_whenever_handed_over(hand_over, monkeypatch):
    """Replicas without tol: the logged steps' median and 10-90 % band over the finite replicas,
    equal to torch.nanquantile of each step alone, every point handed over once and in order, the
    last hand-over at the final step, however often they are handed over."""
    table = _replica_losses(64, 7, dead={3: 20, 4: 0})
    res, calls = _run_replicas(table, hand_over, monkeypatch, steps=57, log_every=3, check_every=10)
    assert res.stop_reason == "steps" and res.steps == 57 and calls[-1][0] == 57
    if hand_over:
        assert len(calls) == 1  # the final read hands everything over
    points = [p for _, pts, _, _ in calls for p in pts]
    times = [t for _, _, ts, _ in calls for t in ts]
    assert [s for s, _ in points] == list(range(0, 57, 3)) and times == sorted(times) and len(times) == len(points)
    q = torch.tensor([0.1, 0.5, 0.9])
    for s, median in points:
        row = table[s]
        lo, mid, hi = torch.nanquantile(torch.where(torch.isfinite(row), row, torch.nan), q).tolist()
        assert median == mid  # exactly: the same kernel, many rows at once or one
        assert (s, lo) in res.bands["loss_q10"] and (s, hi) in res.bands["loss_q90"]
    assert [s for s, _ in res.bands["loss_q10"]] == [s for s, _ in points]


@pytest.mark.parametrize("hand_over", [0.0, 1e9])
def test_replicas_diverge_at_the_first_step_where_none_is_finite(hand_over, monkeypatch):
    table = _replica_losses(64, 3, dead={0: 10, 1: 23, 2: 17})  # all dead from step 23, mid-chunk
    res, calls = _run_replicas(table, hand_over, monkeypatch, steps=60, log_every=1, check_every=10)
    assert res.stop_reason == "diverged" and res.steps == 23 and "step 23" in res.error
    assert [s for _, pts, _, _ in calls for s, _ in pts] == list(range(23)) and calls[-1][0] == 23


def test_an_interrupted_replica_run_hands_over_every_point_it_read(monkeypatch):
    table = _replica_losses(64, 4, dead={})
    x = torch.zeros(4, requires_grad=True)
    import runner.loop as loop

    monkeypatch.setattr(loop, "HAND_OVER_SECONDS", 1e9)  # nothing handed over before the interrupt
    opt = torch.optim.SGD([x], lr=0.0)
    seen, n = [], [0]

    def loss():
        n[0] += 1
        if n[0] == 38:
            raise KeyboardInterrupt
        return x + table[n[0]]

    with pytest.raises(KeyboardInterrupt):
        optimise(loss, opt, steps=100, log_every=5, check_every=10, on_points=lambda d, p, t, c: seen.extend(p))
    assert [s for s, _ in seen] == [0, 5, 10, 15, 20, 25, 30, 35]
