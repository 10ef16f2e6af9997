"""Data tables: round trips through every format, every error message, and properties over
malformed files (random bytes, truncated files, random shapes, dtypes and non-finite values).

The property is the same throughout: load_table returns a finite tensor of the model's dtype
and shape, or raises DataError with a one-line message naming the file; no other exception.
Where the outcome is known in advance (a clean array, a NaN at a known place), it is checked
exactly. Comparisons are exact: every value written is representable in the dtype read.
"""

import io
import math
import os
import re
import zipfile

import hypothesis.extra.numpy as hnp
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentae import JointModel
from latentae.data import FORMATS, DataError, load_table
from tests.conftest import ROOT

PROPERTY = settings(max_examples=60, deadline=None)


def _model(observed):
    """A JointModel with an h ~ N(0, I_2) latent and the observed distribution ``observed(h)``."""

    def model(n):
        with pyro.plate("data", n):
            h = pyro.sample("h", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", observed(h))

    return JointModel(model, name="test")


@pytest.fixture
def ppca():
    return JointModel.from_file(ROOT / "models" / "ppca.py")  # x: shape (5,), real


@pytest.fixture
def binary():
    return JointModel.from_file(ROOT / "models" / "binary.py")  # x: shape (16,), {0, 1}


def _write_csv(path, array, header=None):
    lines = [] if header is None else [",".join(header)]
    lines += [",".join(repr(float(v)) for v in row) for row in np.atleast_2d(array)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_nc(path, variables, group=None):
    import xarray as xr

    ds = xr.Dataset(
        {k: (tuple(f"{k}_dim_{i}" for i in range(v.ndim)), v) for k, v in variables.items()}
    )
    ds.to_netcdf(path, engine="h5netcdf", group=group)


def _write(path, array):
    """Save ``array`` in the format of ``path``'s extension."""
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, array)
    elif suffix == ".csv":
        _write_csv(path, array)
    elif suffix == ".pt":
        torch.save(torch.from_numpy(np.array(array)), path)
    else:
        _write_nc(path, {"x": array})


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip(ppca, tmp_path, suffix):
    x = np.random.default_rng(0).normal(size=(7, 5))
    path = tmp_path / f"table{suffix}"
    _write(path, x)
    got = load_table(path, ppca)
    assert got.dtype == ppca.dtype == torch.float64
    assert got.shape == (7, 5)
    assert torch.equal(got, torch.from_numpy(x))


def test_round_trip_converts_to_the_model_dtype(tmp_path):
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        jm = JointModel.from_file(ROOT / "models" / "ppca.py")
    finally:
        torch.set_default_dtype(dtype)
    x = np.arange(10, dtype=np.int64).reshape(2, 5)
    np.save(tmp_path / "x.npy", x)
    got = load_table(tmp_path / "x.npy", jm)
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.arange(10.0).reshape(2, 5))


def test_npy_any_byte_order_and_layout(ppca, tmp_path):
    x = np.arange(15.0).reshape(3, 5)
    np.save(tmp_path / "x.npy", np.asfortranarray(x.astype(">f8")))
    assert torch.equal(load_table(tmp_path / "x.npy", ppca), torch.from_numpy(x))


def test_boolean_table_for_a_binary_site(binary, tmp_path):
    x = np.random.default_rng(1).random((4, 16)) > 0.5
    np.save(tmp_path / "x.npy", x)
    got = load_table(tmp_path / "x.npy", binary)
    assert torch.equal(got, torch.from_numpy(x.astype(np.float64)))


def test_csv_header_blank_lines_bom_and_crlf(ppca, tmp_path):
    text = "\ufeffa,b,c,d,e\r\n1,2,3,4,5\r\n\r\n 6, 7 ,8,9,1e1\r\n\r\n"
    (tmp_path / "x.csv").write_bytes(text.encode("utf-8"))
    got = load_table(tmp_path / "x.csv", ppca)
    assert torch.equal(got, torch.tensor([[1.0, 2, 3, 4, 5], [6, 7, 8, 9, 10]]))


@pytest.mark.parametrize(
    "content",
    [
        {"x": torch.ones(2, 5), "note": "a string is ignored"},
        {"only": torch.ones(2, 5)},
        [torch.ones(2, 5)],
        (torch.ones(2, 5), 3),
    ],
)
def test_pt_containers(ppca, tmp_path, content):
    torch.save(content, tmp_path / "x.pt")
    assert torch.equal(load_table(tmp_path / "x.pt", ppca), torch.ones(2, 5))


def test_pt_name_selects_the_key(ppca, tmp_path):
    torch.save({"a": torch.zeros(2, 5), "b": torch.ones(3, 5)}, tmp_path / "x.pt")
    assert torch.equal(load_table(tmp_path / "x.pt", ppca, name="b"), torch.ones(3, 5))


def test_pt_bfloat16_and_int_tensors(ppca, tmp_path):
    torch.save(torch.arange(10).reshape(2, 5).to(torch.bfloat16), tmp_path / "b.pt")
    torch.save(torch.arange(10).reshape(2, 5), tmp_path / "i.pt")
    expected = torch.arange(10.0).reshape(2, 5)
    assert torch.equal(load_table(tmp_path / "b.pt", ppca), expected)
    assert torch.equal(load_table(tmp_path / "i.pt", ppca), expected)


def test_nc_picks_the_observed_variable_or_the_only_one(ppca, tmp_path):
    x = np.arange(10.0).reshape(2, 5)
    _write_nc(tmp_path / "named.nc", {"other": np.zeros(3), "x": x})
    _write_nc(tmp_path / "only.nc", {"table": x})
    assert torch.equal(load_table(tmp_path / "named.nc", ppca), torch.from_numpy(x))
    assert torch.equal(load_table(tmp_path / "only.nc", ppca), torch.from_numpy(x))
    assert torch.equal(load_table(tmp_path / "named.nc", name="other"), torch.zeros(3))


def test_nc_inference_data_reads_observed_data(ppca, tmp_path):
    import arviz as az

    x = np.arange(20.0).reshape(4, 5)
    idata = az.from_dict(
        posterior={"h": np.zeros((1, 10, 2))}, observed_data={"x": x}, coords=None, dims=None
    )
    idata.to_netcdf(str(tmp_path / "idata.nc"))
    assert torch.equal(load_table(tmp_path / "idata.nc", ppca), torch.from_numpy(x))


def test_flattened_rows_for_a_matrix_site(tmp_path):
    jm = _model(lambda h: dist.Normal(torch.zeros(2, 3), 1.0).to_event(2))
    x = np.arange(24.0).reshape(4, 6)
    _write_csv(tmp_path / "x.csv", x)
    got = load_table(tmp_path / "x.csv", jm)
    assert torch.equal(got, torch.from_numpy(x).reshape(4, 2, 3))
    np.save(tmp_path / "x.npy", x.reshape(4, 2, 3))
    assert torch.equal(load_table(tmp_path / "x.npy", jm), got)


def test_scalar_site_reads_one_column(tmp_path):
    jm = _model(lambda h: dist.Normal(h[..., 0], 1.0))
    _write_csv(tmp_path / "x.csv", np.arange(3.0).reshape(3, 1))
    assert torch.equal(load_table(tmp_path / "x.csv", jm), torch.arange(3.0))


def test_without_a_model_any_numeric_table(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    got = load_table(tmp_path / "x.npy")
    assert got.dtype == torch.get_default_dtype()
    assert torch.equal(got, torch.arange(24.0).reshape(2, 3, 4))


def test_integer_support_accepts_integers(tmp_path):
    jm = _model(
        lambda h: dist.Binomial(4, logits=h.sum(-1, keepdim=True).expand(-1, 3)).to_event(1)
    )
    _write_csv(tmp_path / "x.csv", np.array([[0, 4, 2], [1, 1, 3]]))
    assert torch.equal(load_table(tmp_path / "x.csv", jm), torch.tensor([[0.0, 4, 2], [1, 1, 3]]))


# ---------------------------------------------------------------------- error messages


def test_missing_file(ppca, tmp_path):
    with pytest.raises(DataError, match=r"'.*nothere\.npy' does not exist; pass the path"):
        load_table(tmp_path / "nothere.npy", ppca)


def test_folder(tmp_path):
    with pytest.raises(DataError, match="is a folder, not a file"):
        load_table(tmp_path)


@pytest.mark.parametrize(("name", "shown"), [("x.txt", "extension '.txt'"), ("x", "no extension")])
def test_unknown_extension_lists_the_supported_ones(tmp_path, name, shown):
    (tmp_path / name).write_text("1,2\n")
    with pytest.raises(DataError, match=rf"has {shown}, .*use a \.npy, \.csv, \.pt or \.nc file"):
        load_table(tmp_path / name)


def test_extension_is_case_insensitive(ppca, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 5)))
    os.rename(tmp_path / "x.npy", tmp_path / "x.NPY")
    assert load_table(tmp_path / "x.NPY", ppca).shape == (2, 5)


def test_npy_object_array_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"holds Python objects .* save a numeric array"):
        load_table(tmp_path / "x.npy")


@pytest.mark.parametrize("suffix", FORMATS)
def test_corrupt_file(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(b"\x89\x00\xff garbage \xfe" * 8)
    with pytest.raises(DataError, match=r"x\.\w+' (could not be read as|is not a UTF-8)"):
        load_table(path)


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".nc"])
def test_truncated_file(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    _write(path, np.ones((50, 5)))
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])
    with pytest.raises(
        DataError, match=r"could not be read as .*(truncated or corrupt|may be corrupt)"
    ):
        load_table(path)


@pytest.mark.parametrize(
    ("array", "kind"),
    [
        (np.array([["a", "b"]]), "strings"),
        (np.ones((2, 2), dtype=np.complex64), "complex numbers"),
        (np.zeros(2, dtype=[("a", "f8"), ("b", "i4")]), "records with fields"),
    ],
)
def test_non_numeric_dtype(tmp_path, array, kind):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(DataError, match=rf"holds {kind}.*not real numbers; save a float"):
        load_table(tmp_path / "x.npy")


def test_single_number_is_not_a_table(tmp_path):
    np.save(tmp_path / "x.npy", np.float64(3.0))
    with pytest.raises(DataError, match=r"holds a single number, not a table"):
        load_table(tmp_path / "x.npy")


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".nc"])
def test_empty_table(ppca, tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    _write(path, np.zeros((0, 5)))
    with pytest.raises(DataError, match=r"is empty \(shape \(0, 5\)\); it needs at least one row"):
        load_table(path, ppca)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "has no rows of numbers; it needs"),
        ("a,b,c,d,e\n", "has no rows of numbers after its header"),
        ("1,2,3,4,5\n6,7,x,9,10\n", r"not a number, 'x', at line 2, column 2; a \.csv table"),
        ("a,b,c,d,e\n1,2,3,4,\n", r"an empty field, at line 2, column 4; fill in the value"),
        ("1,2,3,4,5\n6;7,8,9,10\n", r"'6;7', at line 2, column 0; separate the values with commas"),
        ("1;2;3;4;5\n", "no commas at line 1 .* separate the values with commas"),
        ("1,2,3,4,5\n\n6,7,8,9\n", "4 values at line 3 but 5 at line 1; every row needs the same"),
        ("1,2,3,4,5\n1,2,inf,4,5\n", r"non-finite value \(inf\) at line 2, column 2; remove"),
        ("a,b\n1,nan\n", r"non-finite value \(nan\) at line 2, column 1"),
    ],
)
def test_csv_errors(ppca, tmp_path, text, message):
    (tmp_path / "x.csv").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_table(tmp_path / "x.csv", ppca)


def test_csv_not_utf8(tmp_path):
    (tmp_path / "x.csv").write_bytes(b"1,2\n\xff\xfe,3\n")
    with pytest.raises(DataError, match=r"is not a UTF-8 text file \(byte 4 cannot be decoded\)"):
        load_table(tmp_path / "x.csv")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (3.0, r"holds a float, not a tensor; save the table with torch\.save"),
        (
            {"a": torch.ones(2, 5), "b": torch.ones(2, 5)},
            r"has 2 keys holding a tensor and none "
            r"named 'x' \(its keys: \['a', 'b'\]\); store the table alone or under the name 'x'",
        ),
        ({"y": 1}, r"has 0 keys holding a tensor and none named 'x'"),
        ({"x": [1.0, 2.0]}, r"has 'x' but it is a list, not a tensor"),
        ([], r"has 0 items holding a tensor"),
        (torch.ones(2, 5, dtype=torch.complex64), r"holds complex numbers, not real numbers"),
        ({"x": np.ones(3)}, r"holds Python objects other than tensors, .*torch\.as_tensor"),
    ],
)
def test_pt_errors(ppca, tmp_path, content, message):
    torch.save(content, tmp_path / "x.pt")
    with pytest.raises(DataError, match=message):
        load_table(tmp_path / "x.pt", ppca)


def test_pt_explicit_name_must_exist(ppca, tmp_path):
    torch.save({"x": torch.ones(2, 5)}, tmp_path / "x.pt")
    with pytest.raises(DataError, match=r"has no entry named 'z' \(its keys: \['x'\]\); pass one"):
        load_table(tmp_path / "x.pt", ppca, name="z")


def test_nc_errors(ppca, tmp_path):
    import xarray as xr

    _write_nc(tmp_path / "two.nc", {"a": np.ones((2, 5)), "b": np.ones((2, 5))})
    with pytest.raises(DataError, match=r"has 2 variables holding numbers and none named 'x'"):
        load_table(tmp_path / "two.nc", ppca)
    _write_nc(tmp_path / "grouped.nc", {"x": np.ones((2, 5))}, group="posterior")
    with pytest.raises(DataError, match=r"no 'observed_data' group \(its groups: \['posterior'\]"):
        load_table(tmp_path / "grouped.nc", ppca)
    xr.Dataset({"x": (("r", "c"), np.ones((2, 5)))}).to_netcdf(tmp_path / "v3.nc", engine="scipy")
    with pytest.raises(DataError, match=r"is a netCDF-3 file, .*engine='h5netcdf'"):
        load_table(tmp_path / "v3.nc", ppca)


def test_wrong_shape_names_expected_and_got(ppca, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((4, 3)))
    with pytest.raises(
        DataError,
        match=r"has shape \(4, 3\), but model script '.*ppca\.py' observes 'x' with shape "
        r"\(5,\) per row; pass a table of shape \(rows, 5\)",
    ):
        load_table(tmp_path / "x.npy", ppca)


def test_wrong_shape_for_a_matrix_site_mentions_flattening(tmp_path):
    jm = _model(lambda h: dist.Normal(torch.zeros(2, 3), 1.0).to_event(2))
    np.save(tmp_path / "x.npy", np.ones((4, 3, 2)))
    with pytest.raises(DataError, match=r"shape \(rows, 2, 3\) or \(rows, 6\) with each row flat"):
        load_table(tmp_path / "x.npy", jm)


@pytest.mark.parametrize(("value", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_names_row_and_column(ppca, tmp_path, value, shown):
    x = np.ones((4, 5))
    x[2, 3] = value
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(
        DataError, match=rf"non-finite value \({shown}\) at row 2, column 3; remove or impute"
    ):
        load_table(tmp_path / "x.npy", ppca)


def test_overflow_in_the_model_dtype(tmp_path):
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        jm = JointModel.from_file(ROOT / "models" / "ppca.py")
    finally:
        torch.set_default_dtype(dtype)
    x = np.ones((3, 5))
    x[1, 4] = 1e300
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match=r"value 1e\+300 at row 1, column 4, too large for float32"):
        load_table(tmp_path / "x.npy", jm)


def test_binary_site_refuses_other_values(binary, tmp_path):
    x = np.zeros((3, 16))
    x[1, 7] = 255
    _write_csv(tmp_path / "x.csv", x, header=[f"p{i}" for i in range(16)])
    with pytest.raises(
        DataError,
        match=r"value 255 at row 1, column 7 \(line 3\), outside the support of 'x' in model "
        r"script '.*binary\.py', which is binary, \{0, 1\}; binarize the data",
    ):
        load_table(tmp_path / "x.csv", binary)


def test_integer_site_refuses_fractions(tmp_path):
    jm = _model(lambda h: dist.Poisson(h.exp()).to_event(1))
    np.save(tmp_path / "x.npy", np.array([[1.0, 2.0], [0.0, 2.5]]))
    with pytest.raises(
        DataError, match=r"value 2\.5 at row 1, column 1, outside .*non-negative integers"
    ):
        load_table(tmp_path / "x.npy", jm)


def test_interval_site(tmp_path):
    jm = _model(lambda h: dist.Beta(h.exp(), 1.0).to_event(1))
    np.save(tmp_path / "x.npy", np.array([[0.5, 0.2], [1.5, 0.1]]))
    with pytest.raises(DataError, match=r"value 1\.5 at row 1, column 0, .*the interval \[0, 1\]"):
        load_table(tmp_path / "x.npy", jm)


def test_simplex_site_names_the_row(tmp_path):
    jm = _model(lambda h: dist.Dirichlet(torch.ones(3).expand(h.shape[0], 3)))
    np.save(tmp_path / "x.npy", np.array([[0.5, 0.2, 0.3], [0.5, 0.5, 0.5]]))
    with pytest.raises(DataError, match=r"has row 1, outside the support of 'x' .*simplex"):
        load_table(tmp_path / "x.npy", jm)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------- properties


def _check_outcome(path, jm, expected=None):
    """Load ``path``: a finite tensor of the model's dtype and shape (equal to ``expected``
    when given), or a DataError whose one-line message names the file. Returns the error."""
    try:
        x = load_table(path, jm)
    except DataError as e:
        message = str(e)
        assert path.name in message, message
        assert "\n" not in message, message
        assert not re.search(r"Traceback|File \"", message), message
        return e
    assert x.dtype == jm.dtype
    assert x.shape[1:] == jm.observed_shape
    assert x.shape[0] >= 1
    assert bool(torch.isfinite(x).all())
    if expected is not None:
        assert torch.equal(x, torch.as_tensor(expected, dtype=jm.dtype))
    return None


def test_random_bytes(ppca, tmp_path):
    @PROPERTY
    @given(data=st.binary(max_size=400), suffix=st.sampled_from(FORMATS))
    def check(data, suffix):
        path = tmp_path / f"random{suffix}"
        path.write_bytes(data)
        _check_outcome(path, ppca)

    check()


def _valid_bytes(suffix, array, tmp_path):
    path = tmp_path / f"valid{suffix}"
    _write(path, array)
    return path.read_bytes()


def test_truncated_and_bit_flipped_files(ppca, tmp_path):
    array = np.random.default_rng(2).normal(size=(6, 5))
    valid = {s: _valid_bytes(s, array, tmp_path) for s in FORMATS}

    @PROPERTY
    @given(
        suffix=st.sampled_from(FORMATS),
        cut=st.floats(0.0, 1.0),
        flip=st.none() | st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)),
    )
    def check(suffix, cut, flip):
        data = bytearray(valid[suffix][: int(cut * len(valid[suffix]))])
        if flip is not None and data:
            at, mask = flip
            data[int(at * (len(data) - 1))] ^= mask
        path = tmp_path / f"damaged{suffix}"
        path.write_bytes(bytes(data))
        _check_outcome(path, ppca)

    check()


def test_damaged_zip_members_of_a_pt_file(ppca, tmp_path):
    """torch.save writes a zip archive; a damaged member inside an intact archive."""
    torch.save(torch.ones(4, 5), tmp_path / "ok.pt")
    with zipfile.ZipFile(tmp_path / "ok.pt") as z:
        members = [(i, z.read(i)) for i in z.infolist()]

    @PROPERTY
    @given(which=st.integers(0, len(members) - 1), junk=st.binary(max_size=64))
    def check(which, junk):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
            for i, (info, content) in enumerate(members):
                z.writestr(info, junk if i == which else content)
        path = tmp_path / "member.pt"
        path.write_bytes(buffer.getvalue())
        _check_outcome(path, ppca)

    check()


_DTYPES = [np.float64, np.float32, np.float16, np.int8, np.int64, np.uint8, np.bool_]
_OTHER_DTYPES = [np.complex64, np.dtype("U3"), np.dtype("datetime64[s]")]


def test_random_arrays(ppca, tmp_path):
    """Random shapes and numeric dtypes in every format; the outcome is predicted exactly:
    a table of 5 columns with at least one row loads with its values, anything else fails."""

    @PROPERTY
    @given(
        array=hnp.arrays(
            st.sampled_from(_DTYPES),
            hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6),
            elements={"allow_nan": False, "allow_infinity": False},
        ),
        suffix=st.sampled_from(FORMATS),
    )
    def check(array, suffix):
        if suffix == ".csv":
            # A CSV file is two-dimensional: one line per row, the rest flattened.
            array = array.reshape(array.shape[0], math.prod(array.shape[1:]))
        path = tmp_path / f"array{suffix}"
        _write(path, array)
        fits = array.ndim == 2 and array.shape[1] == 5 and array.shape[0] >= 1
        if suffix == ".csv" and array.size == 0:
            fits = False
        error = _check_outcome(path, ppca, array.astype(np.float64) if fits else None)
        assert (error is None) == fits, error

    check()


def test_non_numeric_arrays(tmp_path):
    @settings(max_examples=15, deadline=None)
    @given(
        array=hnp.arrays(st.sampled_from(_OTHER_DTYPES), hnp.array_shapes(max_dims=2)),
        suffix=st.sampled_from([".npy", ".pt"]),
    )
    def check(array, suffix):
        path = tmp_path / f"other{suffix}"
        if suffix == ".npy":
            np.save(path, array)
        elif array.dtype.kind == "c":
            torch.save(torch.from_numpy(array), path)
        else:
            return  # torch has no string or datetime tensors
        with pytest.raises(DataError, match=r"holds .*not real numbers; save a float"):
            load_table(path)

    check()


def test_non_finite_values_are_located(ppca, tmp_path):
    @PROPERTY
    @given(
        rows=st.integers(1, 6),
        place=st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 4)),
        value=st.sampled_from([np.nan, np.inf, -np.inf]),
        suffix=st.sampled_from(FORMATS),
    )
    def check(rows, place, value, suffix):
        x = np.zeros((rows, 5))
        row, column = int(place[0] * rows), place[1]
        x[row, column] = value
        path = tmp_path / f"nonfinite{suffix}"
        _write(path, x)
        where = (
            f"line {row + 1}, column {column}"
            if suffix == ".csv"
            else f"row {row}, column {column}"
        )
        with pytest.raises(DataError, match=rf"non-finite value \(-?(nan|inf)\) at {where};"):
            load_table(path, ppca)

    check()


def test_binary_support_is_checked_exactly(binary, tmp_path):
    @PROPERTY
    @given(
        array=hnp.arrays(
            np.float64,
            st.tuples(st.integers(1, 5), st.just(16)),
            elements=st.sampled_from([0.0, 1.0, 0.5, 2.0, -1.0]),
        ),
        suffix=st.sampled_from([".npy", ".csv"]),
    )
    def check(array, suffix):
        path = tmp_path / f"binary{suffix}"
        _write(path, array)
        outside = np.argwhere((array != 0) & (array != 1))
        if len(outside) == 0:
            assert torch.equal(load_table(path, binary), torch.from_numpy(array))
            return
        row, column = outside[0]
        with pytest.raises(
            DataError, match=rf"at row {row}, column {column}\b.*binary, \{{0, 1\}}"
        ):
            load_table(path, binary)

    check()
