"""The poly problem: internal bases, the reported monomial coefficients, data files."""
import numpy as np
import pytest
import torch

from runner_plugins.problems.poly import Poly


def solve_internal(problem: Poly, dtype=torch.float64):
    """The least-squares optimum of the internal parameters, by torch's own direct solve."""
    params = problem.initial_params(torch.Generator().manual_seed(0), torch.device("cpu"), dtype)
    Phi, t = torch.tensor(problem.Phi, dtype=dtype), torch.tensor(problem.t, dtype=dtype)
    params["c"] = torch.linalg.lstsq(Phi, t.unsqueeze(1)).solution.squeeze(1)
    return params


@pytest.mark.parametrize("basis", ["chebyshev", "legendre", "monomial"])
@pytest.mark.parametrize("scale", [True, False])
def test_every_basis_reports_the_truth_in_monomial_order(basis, scale):
    problem = Poly(coefficients=[0.5, -1.0, 2.0, 3.0], basis=basis, scale=scale, n_samples=30)
    params = solve_internal(problem)
    np.testing.assert_allclose(problem.solution(params)["coefficients"], [0.5, -1.0, 2.0, 3.0], rtol=0, atol=1e-9)
    assert problem.metrics(params)["coef_error"] < 1e-9
    assert float(problem.loss(params)) < 1e-15


def test_loss_is_the_tutorials_sum_of_squared_errors_in_any_basis():
    raw = Poly(basis="monomial", scale=False, loss="sse")
    cheb = Poly()
    g = torch.Generator().manual_seed(0)
    p_raw = raw.initial_params(g, torch.device("cpu"), torch.float64)
    p_raw["c"] = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)  # low power first: 1x^2+2x+3
    assert float(raw.loss(p_raw)) == pytest.approx(0.0, abs=1e-20)
    p_raw["c"] = torch.tensor([3.0, 2.0, 1.5], dtype=torch.float64)
    expected = float(np.sum((0.5 * raw.x**2) ** 2))
    assert float(raw.loss(p_raw)) == pytest.approx(expected, rel=1e-12)
    assert np.array_equal(raw.x, cheb.x)  # same draw: data depend on data_seed only
    mse = Poly(basis="monomial", scale=False, loss="mse")
    p = mse.initial_params(g, torch.device("cpu"), torch.float64)
    p["c"] = p_raw["c"]
    assert float(mse.loss(p)) == pytest.approx(expected / 20, rel=1e-12)


@pytest.mark.parametrize("basis", ["chebyshev", "monomial"])
def test_scaled_loss_is_the_unexplained_fraction_of_ys_variance(basis):
    """loss=scaled (the default) = sse / (n var y) at the same parameters, and the metric sse
    is the sum of squared errors in y's units whatever the loss."""
    scaled, sse = Poly(basis=basis, noise=0.3), Poly(basis=basis, noise=0.3, loss="sse")
    p = scaled.initial_params(torch.Generator().manual_seed(2), torch.device("cpu"), torch.float64)
    sse.initial_params(torch.Generator().manual_seed(2), torch.device("cpu"), torch.float64)
    y = scaled.y
    assert float(scaled.loss(p)) == pytest.approx(float(sse.loss(p)) / (len(y) * np.var(y)), rel=1e-12)
    fitted = np.polyval(scaled.coefficients(p), scaled.x)
    assert scaled.metrics(p)["sse"] == pytest.approx(float(np.sum((fitted - y) ** 2)), rel=1e-9)
    assert scaled.metrics(p)["sse"] == pytest.approx(float(sse.loss(p)), rel=1e-12)
    p["c"] = torch.zeros_like(p["c"])
    p["c"][0] = 0.0  # the constant fit y = mean(y) (the internal y is centred): 1 - R^2 = 1
    assert float(scaled.loss(p)) == pytest.approx(1.0, rel=1e-12)


def test_tutorial_defaults_and_sample_draw():
    p = Poly()
    assert len(p.x) == 20 and p.degree == 2
    assert np.allclose(p.y, p.x**2 + 2 * p.x + 3)
    assert 1.0 < np.std(p.x) < 10.0
    assert not np.array_equal(Poly(data_seed=1).x, p.x)


def test_data_file(tmp_path):
    f = tmp_path / "d.csv"
    x = np.linspace(-2, 2, 9)
    f.write_text("x,y\n" + "\n".join(f"{a},{2 * a - 1}" for a in x))
    p = Poly(data=str(f), degree=1)
    params = solve_internal(p)
    np.testing.assert_allclose(p.solution(params)["coefficients"], [2.0, -1.0], atol=1e-12)
    assert "coef_error" not in p.metrics(params)  # truth unknown for real data


def test_fit_figure_is_redrawn_for_each_problem_with_and_without_a_truth(tmp_path):
    """The fit figure is reused between calls: each call shows its own data, fit and truth only."""
    f = tmp_path / "d.csv"
    f.write_text("x,y\n" + "\n".join(f"{a},{a * a}" for a in np.linspace(0, 5, 12)))
    for problem, legend in ((Poly(), ["data (20 samples)", "fit", "truth"]), (Poly(data=str(f), degree=2), ["data (12 samples)", "fit"]),
                            (Poly(n_samples=30), ["data (30 samples)", "fit", "truth"])):
        fig = problem.figures(solve_internal(problem))["fit"]
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == legend
        data, fit, _ = ax.get_lines()
        np.testing.assert_array_equal(data.get_xdata(), problem.x)
        np.testing.assert_allclose(fit.get_ydata()[[0, -1]], np.polyval(problem.coefficients(solve_internal(problem)), [problem.x.min(), problem.x.max()]), atol=1e-9)
        fig.savefig(tmp_path / "fit.png")  # draws


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("", "is empty"),
        ("a,b\n1,2\n", "without columns 'x' and 'y'"),
        ("x,y\n1,two\n", "row 2"),
        ("x,y\n1,nan\n", "must be finite"),
        ("x,y\n", "no data rows"),
        ("x,y\n1,2\n", "needs at least 3 samples"),
    ],
)
def test_bad_data_files_are_refused_clearly(tmp_path, content, fragment):
    f = tmp_path / "d.csv"
    f.write_text(content)
    with pytest.raises(ValueError) as err:
        Poly(data=str(f))
    assert fragment in str(err.value)


def test_missing_data_file():
    with pytest.raises(ValueError, match="cannot be read"):
        Poly(data="/no/such/file.csv")
