"""Bad input, category "files": damaged, foreign and hand-made files, and saves that must fail cleanly.

Every loader (statistics in each representation, mixtures, EMS, EMS-estimator checkpoints, the digits
test set, a digits safetensors checkpoint) is fed truncated files and files with one flipped bit at
generated positions: it must raise a ValueError naming the file, or return exactly what was saved (a
flip in a field of the zip container that nothing reads, such as a timestamp, changes nothing).
Hand-made files with missing or wrong arrays and metadata, object arrays and NaN must be refused at
load. Every failed save (metadata JSON cannot encode, unwritable or missing directories, a failure
in the middle of the write) must leave the target byte for byte as it was
(docs/conventions.md#files).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _rules import rejected, unchanged_after_failure
from hypothesis import given, settings
from hypothesis import strategies as st

from gaussport import _files
from gaussport.analytic import Dense, Diagonal, Gaussian, GaussianMixture, LowRankPlusIsotropic
from gaussport.digits import files as digits_files
from gaussport.digits.classifier import DigitsClassifier
from gaussport.ems import EMS, EMSEstimator
from gaussport.evaluation import reporting

# ---------------------------------------------------------------------- the file kinds


def _basis(d: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    return q


def _gaussian(kind: str) -> Gaussian:
    mean = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    lam = torch.tensor([2.0, 1.0, 0.25], dtype=torch.float64)
    cov = {
        "dense": Dense(lam, _basis(3)),
        "diagonal": Diagonal(lam),
        "lowrank": LowRankPlusIsotropic(lam[:2], _basis(3)[:, :2], 0.1),
    }[kind]
    return Gaussian(mean, cov, n_samples=12, scale="[-1, 1]", source="test")


def _mixture() -> GaussianMixture:
    return GaussianMixture([_gaussian("dense"), _gaussian("diagonal")], [1.0, 3.0])


def _ems() -> EMS:
    grid = torch.linspace(0.1, 0.9, 6, dtype=torch.float64).reshape(3, 2)
    return EMS(grid, grid * 0.5, grid - 1.0, sigma_min=0.1, sigma_max=10.0, samples=4, metadata={"a": 1})


def _estimator() -> EMSEstimator:
    return EMSEstimator(
        sigma_min=0.1, sigma_max=10.0, intervals=2, samples=2, batch_size=2, smoothing=0, l=torch.ones(3, 2)
    )


def _classifier() -> DigitsClassifier:
    return DigitsClassifier(
        channels=2, feature_dim=2, num_classes=2, generator=torch.Generator().manual_seed(0)
    )


def _content(obj: Any) -> Any:
    """What a loaded object holds, as comparable plain values."""
    if isinstance(obj, Gaussian):
        arrays = {k: v.tolist() for k, v in obj.cov.arrays().items()}
        return (
            obj.shape,
            obj.mean.tolist(),
            obj.representation,
            arrays,
            obj.n_samples,
            obj.scale,
            obj.source,
        )
    if isinstance(obj, GaussianMixture):
        return (obj.weights.tolist(), [_content(c) for c in obj.components])
    if isinstance(obj, EMS):
        return (obj.l.tolist(), obj.s.tolist(), obj.b.tolist(), obj.sigma_min, obj.sigma_max, obj.samples)
    if isinstance(obj, EMSEstimator):
        meta = (obj.phase, obj.level, obj.batch, obj.shape, obj.intervals, obj.samples, obj.sigma_min)
        return (meta, {k: v.tolist() for k, v in sorted(obj.arrays.items())})
    if isinstance(obj, digits_files.DigitsTestSet):
        return (obj.pixels.tolist(), obj.labels.tolist(), obj.indices.tolist(), obj.metadata)
    if isinstance(obj, torch.nn.Module):
        return {k: v.tolist() for k, v in obj.state_dict().items()}
    raise TypeError(type(obj))


# name -> (file name, save(path), load(path))
KINDS: dict[str, tuple[str, Callable[[Path], None], Callable[[Path], Any]]] = {
    **{
        f"statistics-{kind}": ("g.npz", (lambda k: lambda p: _gaussian(k).save(p))(kind), Gaussian.load)
        for kind in ("dense", "diagonal", "lowrank")
    },
    **{
        f"statistics-{kind}-safetensors": (
            "g.safetensors",
            (lambda k: lambda p: _gaussian(k).save(p))(kind),
            Gaussian.load,
        )
        for kind in ("dense", "diagonal", "lowrank")
    },
    "mixture": ("m.npz", lambda p: _mixture().save(p), GaussianMixture.load),
    "ems": ("e.npz", lambda p: _ems().save(p), EMS.load),
    "ems-estimator": ("c.npz", lambda p: _estimator().save(p), EMSEstimator.load),
    "digits-test-set": (
        digits_files.TEST_SET_FILE,
        lambda p: digits_files.save_test_set(
            p, np.arange(12, dtype=np.uint8).reshape(3, 2, 2), [0, 1, 9], [4, 5, 6], {"seed": 0}
        ),
        lambda p: digits_files.load_digits_test_set(directory=p.parent),
    ),
    "digits-checkpoint": (
        digits_files.CLASSIFIER_FILE,
        lambda p: digits_files.save_network(_classifier(), p, digits_files.CLASSIFIER_FORMAT, extra={"x": 1}),
        lambda p: digits_files.load_digits_classifier(directory=p.parent),
    ),
}


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, Any]]:
    """Each kind's saved bytes and the content of loading them."""
    out = {}
    for name, (file, save, load) in KINDS.items():
        path = tmp_path_factory.mktemp(name) / file
        save(path)
        out[name] = (path.read_bytes(), _content(load(path)))
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("damaged")


def _refused_or_identical(name: str, data: bytes, originals: dict, scratch: Path) -> None:
    file, _, load = KINDS[name]
    path = scratch / file
    path.write_bytes(data)
    try:
        loaded = load(path)
    except ValueError as exc:
        assert repr(os.fspath(path)) in str(exc), f"the error does not name the file: {exc}"
        return
    except BaseException as exc:  # noqa: BLE001
        raise AssertionError(f"a damaged {name} file raised {type(exc).__name__}: {exc}") from exc
    assert _content(loaded) == originals[name][1], f"a damaged {name} file loaded different values"


@pytest.mark.parametrize("name", list(KINDS))
@settings(max_examples=30)
@given(fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files_are_refused(name: str, fraction: float, originals: dict, scratch: Path) -> None:
    data = originals[name][0]
    _refused_or_identical(name, data[: int(fraction * len(data))], originals, scratch)


@pytest.mark.parametrize("name", list(KINDS))
@settings(max_examples=40)
@given(fraction=st.floats(0.0, 1.0, exclude_max=True), bit=st.integers(0, 7))
def test_flipped_bits_are_refused_or_change_nothing(
    name: str, fraction: float, bit: int, originals: dict, scratch: Path
) -> None:
    data = bytearray(originals[name][0])
    data[int(fraction * len(data))] ^= 1 << bit
    _refused_or_identical(name, bytes(data), originals, scratch)


def test_damaged_files_raise_value_error(originals: dict, scratch: Path) -> None:
    """Issue 12 item 3: a truncated or bit-flipped file gave zipfile.BadZipFile, not ValueError."""
    for name in ("statistics-dense", "mixture", "ems", "ems-estimator"):
        data = originals[name][0]
        for damaged in (data[: len(data) // 2], data[:-1]):
            _refused_or_identical(name, damaged, originals, scratch)
            with pytest.raises(ValueError):
                KINDS[name][2](scratch / KINDS[name][0])


# ---------------------------------------------------------------------- hand-made files


def _write(path: Path, fmt: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """A file in gaussport's layout with exactly these metadata and arrays (no validation)."""
    with open(path, "wb") as f:
        np.savez(f, gaussport_format=np.array(fmt), metadata=np.array(json.dumps(meta)), **arrays)


def _parts(name: str, originals: dict) -> tuple[str, dict, dict[str, np.ndarray]]:
    """The format tag, metadata and arrays of a kind's original file."""
    import io

    with np.load(io.BytesIO(originals[name][0]), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    fmt = str(arrays.pop("gaussport_format"))
    return fmt, json.loads(str(arrays.pop("metadata"))), arrays


NPZ_KINDS = [k for k in KINDS if k != "digits-checkpoint" and not k.endswith("-safetensors")]
ST_KINDS = [k for k in KINDS if k.endswith("-safetensors")]


def _array_cases() -> list[tuple[str, str]]:
    cases = []
    for name in NPZ_KINDS:
        for key in {
            "statistics-dense": ["mean", "eigenvalues", "eigenvectors"],
            "statistics-diagonal": ["mean", "variances"],
            "statistics-lowrank": ["mean", "eigenvalues", "eigenvectors", "residual"],
            "mixture": ["weights", "c0_mean", "c0_eigenvectors", "c1_variances"],
            "ems": ["l", "s", "b"],
            "ems-estimator": ["l_value", "l_derivative", "f_mean", "l_count"],
            "digits-test-set": ["pixels", "labels", "indices"],
        }[name]:
            cases.append((name, key))
    return cases


@pytest.mark.parametrize(("name", "key"), _array_cases())
@pytest.mark.parametrize("damage", ["missing", "nan", "inf", "strings", "complex", "bool", "extra-dim"])
def test_missing_or_wrong_arrays_are_refused(
    name: str, key: str, damage: str, originals: dict, scratch: Path
) -> None:
    fmt, meta, arrays = _parts(name, originals)
    value = arrays[key]
    if damage in ("nan", "inf") and value.dtype.kind != "f":
        damage = "strings"  # integer arrays cannot hold NaN
    if damage == "missing":
        del arrays[key]
    elif damage in ("nan", "inf"):
        value = value.copy()
        value.reshape(-1)[0] = np.nan if damage == "nan" else np.inf
        arrays[key] = value
    elif damage == "strings":
        arrays[key] = value.astype(str)
    elif damage == "complex":
        arrays[key] = value.astype(np.complex128)
    elif damage == "bool":
        arrays[key] = value.astype(bool)
    else:
        arrays[key] = value[None]
    file, _, load = KINDS[name]
    path = scratch / file
    _write(path, fmt, meta, arrays)
    exc = rejected(lambda: load(path))
    assert isinstance(exc, ValueError) and repr(os.fspath(path)) in str(exc)


def test_nan_eigenvectors_are_refused_at_load(tmp_path: Path) -> None:
    """Issue 12 item 3: only eigenvalues were checked, so G.flow and G(x, s) returned NaN silently."""
    g = _gaussian("dense")
    path = tmp_path / "g.npz"
    u = g.cov.eigenvectors.numpy().copy()
    u[0, 0] = np.nan
    _write(
        path,
        "gaussport.gaussian",
        {"version": 1, "shape": [3], "representation": "dense"},
        {"mean": g.mean.numpy(), "eigenvalues": g.cov.eigenvalues.numpy(), "eigenvectors": u},
    )
    with pytest.raises(ValueError, match="eigenvectors"):
        Gaussian.load(path)


def test_negative_eigenvalues_are_refused_at_load(tmp_path: Path) -> None:
    fmt, meta, arrays = _parts_of(_gaussian("diagonal"), tmp_path)
    arrays["variances"] = -arrays["variances"]
    _write(tmp_path / "g.npz", fmt, meta, arrays)
    rejected(lambda: Gaussian.load(tmp_path / "g.npz"))


def _parts_of(g: Gaussian, tmp_path: Path) -> tuple[str, dict, dict[str, np.ndarray]]:
    g.save(tmp_path / "orig.npz")
    with np.load(tmp_path / "orig.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return str(arrays.pop("gaussport_format")), json.loads(str(arrays.pop("metadata"))), arrays


ESTIMATOR_KEYS = ["sigma_min", "intervals", "samples", "shape", "phase", "level", "batch", "given_l", "seed"]


OUT_OF_RANGE = {
    "sigma_min": -1.0,
    "intervals": 10**6,
    "samples": 0,
    "shape": [7],
    "phase": "q",
    "level": 10**6,
    "batch": 10**6,
    "given_l": None,
}
ESTIMATOR_CASES = [
    (key, damage)
    for key in ESTIMATOR_KEYS
    for damage in ("missing", "string", "float", "out-of-range")
    if damage != "out-of-range" or key in OUT_OF_RANGE
]


@pytest.mark.parametrize(("key", "damage"), ESTIMATOR_CASES)
def test_estimator_checkpoint_metadata_is_checked(
    key: str, damage: str, originals: dict, scratch: Path
) -> None:
    """Issue 12 item 3: a missing metadata key raised KeyError from EMSEstimator.load."""
    fmt, meta, arrays = _parts("ems-estimator", originals)
    if damage == "missing":
        del meta[key]
    elif damage == "string":
        meta[key] = "x"
    elif damage == "float":
        meta[key] = float("nan") if key == "sigma_min" else 2.5
    else:
        meta[key] = OUT_OF_RANGE[key]
    path = scratch / "c.npz"
    _write(path, fmt, meta, arrays)
    exc = rejected(lambda: EMSEstimator.load(path))
    assert isinstance(exc, ValueError)


@pytest.mark.parametrize("name", NPZ_KINDS)
@pytest.mark.parametrize(
    "meta_damage", ["not-json", "json-list", "no-version", "string-version", "newer-version", "wrong-tag"]
)
def test_damaged_metadata_is_refused(name: str, meta_damage: str, originals: dict, scratch: Path) -> None:
    fmt, meta, arrays = _parts(name, originals)
    text = json.dumps(meta)
    if meta_damage == "not-json":
        text = text[:-1]
    elif meta_damage == "json-list":
        text = "[1, 2]"
    elif meta_damage == "no-version":
        text = json.dumps({k: v for k, v in meta.items() if k != "version"})
    elif meta_damage == "string-version":
        text = json.dumps({**meta, "version": "1"})
    elif meta_damage == "newer-version":
        text = json.dumps({**meta, "version": 99})
    else:
        fmt = "gaussport.something_else"
    file, _, load = KINDS[name]
    path = scratch / file
    with open(path, "wb") as f:
        np.savez(f, gaussport_format=np.array(fmt), metadata=np.array(text), **arrays)
    exc = rejected(lambda: load(path))
    assert isinstance(exc, ValueError)


MARKER = Path("/tmp/gaussport-bad-input-unpickled")


class _Payload:
    def __reduce__(self) -> tuple:
        return (MARKER.write_text, ("ran",))


@pytest.mark.parametrize("name", NPZ_KINDS)
def test_object_arrays_are_refused_and_never_unpickled(name: str, originals: dict, scratch: Path) -> None:
    MARKER.unlink(missing_ok=True)
    fmt, meta, arrays = _parts(name, originals)
    key = next(iter(arrays))
    arrays[key] = np.array([_Payload()], dtype=object)
    file, _, load = KINDS[name]
    path = scratch / file
    with open(path, "wb") as f:
        np.savez(f, gaussport_format=np.array(fmt), metadata=np.array(json.dumps(meta)), **arrays)
    rejected(lambda: load(path))
    assert not MARKER.exists(), "loading executed pickled code"


def test_foreign_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 and then nothing of a zip archive")
    (tmp_path / "empty.npz").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as z:
        z.writestr("readme.txt", "hello")
    for name in ("junk.npz", "empty.npz", "other.npz"):
        for load in (Gaussian.load, GaussianMixture.load, EMS.load, EMSEstimator.load):
            assert isinstance(rejected(lambda: load(tmp_path / name)), ValueError)  # noqa: B023
    for load in (Gaussian.load, EMS.load, EMSEstimator.load, GaussianMixture.load):
        assert isinstance(rejected(lambda: load(tmp_path / "absent.npz")), FileNotFoundError)  # noqa: B023
    assert isinstance(rejected(lambda: Gaussian.load(tmp_path)), ValueError)
    official = (tmp_path / "junk.npz", tmp_path / "other.npz")
    exc = rejected(lambda: EMS.from_official(*official, lambda_start=0, lambda_end=1))
    assert isinstance(exc, ValueError)
    missing = (tmp_path / "absent.npz", tmp_path / "other.npz")
    exc = rejected(lambda: EMS.from_official(*missing, lambda_start=0, lambda_end=1))
    assert isinstance(exc, FileNotFoundError)
    for load in (digits_files.load_digits_classifier, digits_files.load_digits_denoiser):
        rejected(lambda: load(directory=tmp_path / "nowhere"))  # noqa: B023


# ---------------------------------------------------------------------- hand-made safetensors statistics


def _st_parts(name: str, originals: dict) -> tuple[dict[str, str], dict, dict[str, np.ndarray]]:
    """The header metadata, JSON metadata and arrays of a safetensors kind's original file."""
    from safetensors.numpy import load

    data = originals[name][0]
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    return header, json.loads(header["metadata"]), load(data)


def _write_st(
    path: Path, header: dict[str, str], meta: Any, arrays: dict[str, np.ndarray], digest: bool
) -> None:
    """A safetensors file with exactly these contents; ``digest``: a SHA-256 that matches them."""
    from safetensors.numpy import save

    text = meta if isinstance(meta, str) else json.dumps(meta)
    stored = {**header, "metadata": text}
    if digest:
        stored["sha256"] = _files._safetensors_digest(text, arrays)
    path.write_bytes(save(arrays, metadata=stored))


ST_DAMAGE = [
    "stale-digest",
    "no-digest",
    "not-json",
    "json-list",
    "no-version",
    "newer-version",
    "no-shape",
    "wrong-rank",
    "wrong-shape",
    "wrong-tag",
    "nan-mean",
    "negative-eigenvalue",
    "missing-array",
    "int-mean",
]


@pytest.mark.parametrize("name", ST_KINDS)
@pytest.mark.parametrize("damage", ST_DAMAGE)
def test_hand_made_safetensors_statistics_are_refused(
    name: str, damage: str, originals: dict, scratch: Path
) -> None:
    header, meta, arrays = _st_parts(name, originals)
    digest = damage != "stale-digest"
    first = "variances" if "variances" in arrays else "eigenvalues"
    if damage == "stale-digest":  # structurally fine, but not the values the digest was made of
        arrays["mean"] = arrays["mean"] + 1.0
    elif damage == "no-digest":
        digest = False
        header = {k: v for k, v in header.items() if k != "sha256"}
    elif damage in ("not-json", "json-list"):
        meta = json.dumps(meta)[:-1] if damage == "not-json" else "[1, 2]"
    elif damage == "no-version":
        del meta["version"]
    elif damage == "newer-version":
        meta["version"] = 99
    elif damage == "no-shape":
        del meta["shape"]
    elif damage == "wrong-rank":
        meta["rank"] = 7
    elif damage == "wrong-shape":
        meta["shape"] = [2, 2]
    elif damage == "wrong-tag":
        header = {**header, "gaussport_format": "gaussport.something_else"}
    elif damage == "nan-mean":
        arrays["mean"] = np.full_like(arrays["mean"], np.nan)
    elif damage == "negative-eigenvalue":
        arrays[first] = -arrays[first]
    elif damage == "missing-array":
        del arrays[first]
    else:
        arrays["mean"] = arrays["mean"].astype(np.int64)
    path = scratch / "g.safetensors"
    _write_st(path, header, meta, arrays, digest=digest)
    exc = rejected(lambda: Gaussian.load(path))
    assert isinstance(exc, ValueError) and repr(os.fspath(path)) in str(exc), exc
    if damage == "newer-version":
        assert "Upgrade gaussport" in str(exc)
    if damage == "stale-digest":
        assert "SHA-256" in str(exc)


def test_safetensors_and_npz_statistics_hold_the_same(originals: dict, tmp_path: Path) -> None:
    for kind in ("dense", "diagonal", "lowrank"):
        assert originals[f"statistics-{kind}-safetensors"][1] == originals[f"statistics-{kind}"][1]
    # The kind is read from the file's first bytes, not its name.
    (tmp_path / "renamed.npz").write_bytes(originals["statistics-dense-safetensors"][0])
    (tmp_path / "renamed.safetensors").write_bytes(originals["statistics-dense"][0])
    for name in ("renamed.npz", "renamed.safetensors"):
        assert _content(Gaussian.load(tmp_path / name)) == originals["statistics-dense"][1]
    for junk in (b"", b"\x00" * 3, b"\xff" * 64, b"{}" * 10):
        (tmp_path / "junk.safetensors").write_bytes(junk)
        exc = rejected(lambda: Gaussian.load(tmp_path / "junk.safetensors"))
        assert isinstance(exc, ValueError) and "junk.safetensors" in str(exc)


# ---------------------------------------------------------------------- failed saves


def _savers() -> dict[str, Callable[[Path], None]]:
    """A save per kind that must fail before the target is touched (metadata JSON cannot encode)."""

    def gaussian(p: Path) -> None:
        g = _gaussian("dense")
        g.n_samples = np.int64(7)  # a public attribute set after construction
        g.save(p)

    def gaussian_tensor(p: Path) -> None:
        g = _gaussian("diagonal")
        g.source = torch.tensor(1.0)  # type: ignore[assignment]
        g.save(p)

    def mixture(p: Path) -> None:
        m = _mixture()
        m.components[0].n_samples = torch.tensor(3)  # type: ignore[assignment]
        m.save(p)

    def ems(p: Path) -> None:
        e = _ems()
        e.metadata["x"] = torch.tensor(1.0)
        e.save(p)

    def estimator(p: Path) -> None:
        est = _estimator()
        est.seconds = torch.tensor(1.0)  # type: ignore[assignment]
        est.save(p)

    def test_set(p: Path) -> None:
        digits_files.save_test_set(p, np.zeros((1, 2, 2), np.uint8), [0], [0], {"seed": np.int64(1)})

    def network(p: Path) -> None:
        digits_files.save_network(
            _classifier(), p, digits_files.CLASSIFIER_FORMAT, extra={"x": torch.ones(1)}
        )

    def figure(p: Path) -> None:
        reporting.plot_quality([reporting.Series("a", [1, 2], [1.0, 0.5])], p.with_suffix(".nonsense"))

    return {
        "statistics": gaussian,
        "statistics-tensor": gaussian_tensor,
        "mixture": mixture,
        "ems": ems,
        "ems-estimator": estimator,
        "digits-test-set": test_set,
        "digits-checkpoint": network,
        "figure": figure,
    }


SAVERS = _savers()


@pytest.mark.parametrize("name", list(SAVERS))
def test_failed_save_keeps_the_existing_file(name: str, tmp_path: Path) -> None:
    """Issue 12 item 1: the target was truncated before the metadata was encoded (a 0-byte file)."""
    target = tmp_path / "target.npz"
    if name == "figure":
        target = tmp_path / "target.nonsense"
    target.write_bytes(b"precious contents")
    unchanged_after_failure(target, lambda: SAVERS[name](target))
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name], "a temporary file was left behind"


def test_issue_example_keeps_the_statistics(tmp_path: Path) -> None:
    """Issue 12 item 1, verbatim: the second save left ``p`` empty."""
    p = tmp_path / "g.npz"
    _gaussian("dense").save(p)
    before = p.read_bytes()
    g = Gaussian(torch.zeros(6), torch.eye(6), n_samples=np.int64(7))  # converted to int: saves
    assert type(g.n_samples) is int
    g.save(p)
    assert Gaussian.load(p).n_samples == 7
    p.write_bytes(before)
    ems = _ems()
    ems.metadata["t"] = torch.zeros(1)
    unchanged_after_failure(p, lambda: ems.save(p))


SAVE_ANY: dict[str, Callable[[Path], Any]] = {
    "statistics": lambda p: _gaussian("lowrank").save(p),
    "statistics-safetensors": lambda p: _files.write_safetensors(  # Gaussian.save's writer, any name
        p,
        "gaussport.gaussian",
        1,
        {"shape": [3], "representation": "diagonal"},
        _gaussian("diagonal").cov.arrays(),
    ),
    "mixture": lambda p: _mixture().save(p),
    "ems": lambda p: _ems().save(p),
    "ems-estimator": lambda p: _estimator().save(p),
    "digits-test-set": lambda p: digits_files.save_test_set(p, np.zeros((1, 2, 2), np.uint8), [0], [0], {}),
    "digits-checkpoint": lambda p: digits_files.save_network(
        _classifier(), p, digits_files.CLASSIFIER_FORMAT
    ),
    "figure": lambda p: reporting.plot_quality([reporting.Series("a", [1, 2], [1.0, 0.5])], p),
}


@pytest.mark.parametrize("name", list(SAVE_ANY))
def test_saves_into_missing_directories_name_the_path(name: str, tmp_path: Path) -> None:
    target = tmp_path / "absent" / "file.png"
    exc = rejected(lambda: SAVE_ANY[name](target))
    assert isinstance(exc, FileNotFoundError) and "absent" in str(exc)
    assert not (tmp_path / "absent").exists()
    parent_is_file = tmp_path / "a-file"
    parent_is_file.write_bytes(b"x")
    unchanged_after_failure(parent_is_file, lambda: SAVE_ANY[name](parent_is_file / "sub.npz"))
    exc = rejected(lambda: SAVE_ANY[name](tmp_path))  # a directory as the target
    assert str(tmp_path) in str(exc)


@pytest.mark.parametrize("name", list(SAVE_ANY))
def test_saves_into_unwritable_directories_keep_the_file(name: str, tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    target = folder / "file.png"
    target.write_bytes(b"precious contents")
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: a read-only directory is still writable")
        exc = unchanged_after_failure(target, lambda: SAVE_ANY[name](target))
        assert isinstance(exc, OSError) and str(folder) in str(exc)
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("name", list(SAVE_ANY))
def test_a_write_interrupted_midway_keeps_the_file(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The content is produced in a temporary file: a failure after some bytes leaves the target alone."""
    target = tmp_path / "file.png"
    target.write_bytes(b"precious contents")
    real = _files.atomic_writer

    def failing(path: Any, mode: str = "wb", **kwargs: Any) -> Any:
        import contextlib

        @contextlib.contextmanager
        def gen() -> Any:
            with real(path, mode, **kwargs) as f:
                f.write(b"partial" if "b" in mode else "partial")
                raise OSError(f"disk full while writing {os.fspath(path)!r} (simulated)")
                yield f

        return gen()

    for module in (_files, digits_files, reporting):
        monkeypatch.setattr(module, "atomic_writer", failing, raising=False)
    unchanged_after_failure(target, lambda: SAVE_ANY[name](target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.png"]


def test_saves_round_trip_through_the_atomic_writer(tmp_path: Path) -> None:
    """A successful save replaces the file and keeps its permissions; nothing else is left."""
    for name, save in SAVE_ANY.items():
        target = tmp_path / f"{name}.png"
        target.write_bytes(b"old")
        target.chmod(0o640)
        save(target)
        assert target.read_bytes() != b"old" and (target.stat().st_mode & 0o777) == 0o640
    assert all(not p.name.startswith(".") for p in tmp_path.iterdir())
