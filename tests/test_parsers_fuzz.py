"""Data files are parsed, never evaluated: random and adversarial contents are either accepted
with the right meaning or refused with a clear error, never a crash."""
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner_plugins.problems.linsys import read_matrix
from runner_plugins.problems.poly import read_xy_csv
from runner_plugins.problems.strd import StrdError, read_strd

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=30))
def test_csv_with_numbers_reads_back_exactly(tmp_path, rows):
    path = tmp_path / "d.csv"
    path.write_text("x,y\n" + "\n".join(f"{x!r},{y!r}" for x, y in rows))
    x, y = read_xy_csv(str(path))
    assert list(zip(x, y)) == rows


@SETTINGS
@given(st.text(max_size=300))
def test_any_text_as_csv_is_read_or_refused(tmp_path, text):
    path = tmp_path / "d.csv"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        x, y = read_xy_csv(str(path))
    except ValueError as err:
        assert "problem.data" in str(err)
    else:
        assert len(x) == len(y) > 0 and all(math.isfinite(v) for v in [*x, *y])


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes_as_a_matrix_file_are_read_or_refused(tmp_path, data):
    for suffix in (".npy", ".csv", ".mtx"):
        path = tmp_path / f"m{suffix}"
        path.write_bytes(data)
        try:
            m = read_matrix(str(path), "problem.A")
        except ValueError as err:
            assert "problem.A" in str(err)
        else:
            values = m.data if hasattr(m, "tocsr") else np.asarray(m)
            assert np.all(np.isfinite(values))


@SETTINGS
@given(st.text(max_size=2000))
def test_any_text_as_a_strd_file_is_read_or_refused(tmp_path, text):
    path = tmp_path / "x.dat"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        read_strd(path)
    except StrdError as err:
        assert "NIST StRD file" in str(err)
