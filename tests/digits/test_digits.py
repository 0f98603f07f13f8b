"""Tests of the shipped 8x8-digits model, its statistics, loaders and file formats."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch

import gaussport
import gaussport.digits
from gaussport.analytic import Gaussian, GaussianMixture, anisotropic_mixture
from gaussport.analytic.covariance import Diagonal, LowRankPlusIsotropic
from gaussport.digits import (
    DigitsFrechet,
    DigitsUNet,
    digits_features,
    digits_frechet_distance,
    edm_preconditioning,
    load_digits_class_gaussians,
    load_digits_classifier,
    load_digits_denoiser,
    load_digits_gaussian,
    load_digits_test_set,
)
from gaussport.digits import files as digits_module
from gaussport.metrics import frechet_distance


@pytest.fixture(scope="module")
def net() -> DigitsUNet:
    return load_digits_denoiser()


@pytest.fixture(scope="module")
def gaussian() -> Gaussian:
    return load_digits_gaussian()


@pytest.fixture(scope="module")
def provenance() -> dict:
    with digits_module.data_path("digits_provenance.json") as path:
        return json.loads(path.read_text())


# ---------------------------------------------------------------------- the network
def test_edm_preconditioning_coefficients() -> None:
    # At sigma = sigma_data = 0.5: c_skip = 1/2, c_out = 0.25 / sqrt(0.5), c_in = 1 / sqrt(0.5).
    c_skip, c_out, c_in, c_noise = edm_preconditioning(torch.tensor([0.5, 80.0], dtype=torch.float64))
    torch.testing.assert_close(c_skip[0], torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(c_out[0], torch.tensor(0.25 / math.sqrt(0.5), dtype=torch.float64))
    torch.testing.assert_close(c_in[0], torch.tensor(1 / math.sqrt(0.5), dtype=torch.float64))
    torch.testing.assert_close(c_noise, torch.log(torch.tensor([0.5, 80.0], dtype=torch.float64)) / 4)
    # c_skip + c_out^2 / sd^2 = sd^2 / (s^2 + sd^2) + s^2 / (s^2 + sd^2) = 1 for every sigma.
    s = torch.tensor([0.002, 0.3, 7.0, 80.0], dtype=torch.float64)
    c_skip, c_out, _, _ = edm_preconditioning(s)
    torch.testing.assert_close(c_skip + (c_out / 0.5) ** 2, torch.ones_like(s))


def test_untrained_network_is_the_isotropic_gaussian_denoiser() -> None:
    # Zero-initialised output layer: F = 0, so D = c_skip x, the exact denoiser of N(0, 0.25 I).
    fresh = DigitsUNet(generator=torch.Generator().manual_seed(3)).eval()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.01, 0.5, 3.0, 80.0])
    expected = Gaussian(torch.zeros(1, 8, 8), 0.25 * torch.eye(64))(x, sigma)
    torch.testing.assert_close(fresh(x, sigma), expected, rtol=1e-6, atol=1e-7)


def test_shipped_denoiser_interface(net: DigitsUNet) -> None:
    assert (net.img_resolution, net.img_channels, net.label_dim) == (8, 1, 10)
    assert (net.sigma_min, net.sigma_max) == (0.002, 80.0)
    torch.testing.assert_close(net.round_sigma(torch.tensor([0.3, 2.0])), torch.tensor([0.3, 2.0]))
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert all(p.dtype == torch.float32 for p in net.parameters())
    n_params = sum(p.numel() for p in net.parameters())
    assert 300_000 <= n_params <= 1_500_000
    assert isinstance(net, gaussport.Denoiser)


def test_shipped_denoiser_shapes_dtypes_and_determinism(net: DigitsUNet) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 8, 8, generator=gen)
    sigma = torch.tensor([0.002, 0.05, 0.5, 2.0, 10.0, 80.0])
    out = net(x, sigma)
    assert out.shape == x.shape and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert torch.equal(out, net(x.clone(), sigma.clone()))  # deterministic in eval mode
    assert torch.equal(out, load_digits_denoiser()(x, sigma))  # a second load gives the same weights
    net64 = load_digits_denoiser(dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in net64.parameters())
    out64 = net64(x.double(), sigma.double())
    assert out64.dtype == torch.float64
    # float32 vs float64 weights: the same function up to float32 round-off.
    torch.testing.assert_close(out.double(), out64, rtol=0, atol=1e-4)
    # EDM calling convention: sigma [B, 1, 1, 1], one-hot labels; all-zero rows = unconditional.
    torch.testing.assert_close(net(x, sigma.reshape(-1, 1, 1, 1), torch.zeros(6, 10)), out, rtol=0, atol=0)


def test_class_labels_integer_and_one_hot_agree_and_condition(net: DigitsUNet) -> None:
    x = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    sigma = torch.full((10,), 1.0)
    labels = torch.arange(10)
    by_int = net(x, sigma, labels)
    by_one_hot = net(x, sigma, torch.nn.functional.one_hot(labels, 10).float())
    torch.testing.assert_close(by_int, by_one_hot, rtol=0, atol=0)
    assert (by_int - net(x, sigma)).abs().max() > 1e-2  # the label changes the output
    with pytest.raises(ValueError, match="class_labels"):
        net(x, sigma, torch.full((10,), 10))


@pytest.mark.slow
def test_class_conditional_samples_are_classified_as_their_label(net: DigitsUNet) -> None:
    # A label-conditional solve must produce that digit; the shipped classifier (99% test accuracy)
    # judges it. Heun, 10-level Karras grid, 10 samples per class (measured: 97% correct).
    clf = load_digits_classifier()
    labels = torch.arange(10).repeat_interleave(10)
    x_t = 80.0 * torch.randn(100, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    conditional = functools.partial(net, class_labels=labels)
    grid = gaussport.grids.karras(10, 0.002, 80.0)
    samples = gaussport.solve(conditional, x_t, grid, "heun", disable=True).x
    with torch.no_grad():
        accuracy = float((clf(samples.clamp(-1, 1)).argmax(1) == labels).float().mean())
    assert accuracy >= 0.9


@pytest.mark.slow
def test_shipped_denoiser_through_the_edm_adapter(net: DigitsUNet) -> None:
    # The net has EDMPrecond's interface, so gaussport's EDM adapter samples it as EDM's sampler does.
    from gaussport.adapters.edm import edm_sample
    from gaussport.adapters.guidance import ClassConditionalGaussian

    latents = torch.randn(100, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    # All-zero label rows are the null label: the unconditional model, identical to a plain solve
    # (bitwise, so a few samples show it as well as a hundred).
    few = latents[:8]
    plain = edm_sample(net, few, torch.zeros(8, 10), num_steps=10, disable=True)
    grid = gaussport.grids.karras(10, 0.002, 80.0)
    x = 80.0 * few.double()
    direct = gaussport.solve(net, x, grid, "heun", disable=True, model_dtype=torch.float32)
    assert plain.sigmas == direct.sigmas and torch.equal(plain.x, direct.x)
    # The same through the explicit unconditional switch; a conditional net without labels is an error.
    from gaussport.adapters.edm import EDMDenoiser

    null = edm_sample(EDMDenoiser(net, unconditional=True), few, num_steps=10, disable=True)
    assert torch.equal(null.x, plain.x)
    with pytest.raises(ValueError, match="unconditional=True"):
        edm_sample(net, few, num_steps=10, disable=True)
    with pytest.raises(ValueError, match="not both"):
        EDMDenoiser(net, torch.zeros(8, 10), unconditional=True)
    # Class-conditional sampling with the class-conditional teleport (each sample flows with its own
    # class's Gaussian to sigma = 5): the shipped classifier recognises the labels (measured: 98%).
    labels = torch.arange(10).repeat_interleave(10)
    warm = ClassConditionalGaussian.from_mixture(load_digits_class_gaussians())
    sol = edm_sample(
        net, latents, labels, num_steps=10, warm_start=warm, sigma_skip=5.0, teleport="respace", disable=True
    )
    assert sol.nfe == 19 and sol.teleport is not None
    with torch.no_grad():
        predicted = load_digits_classifier()(sol.x.float().clamp(-1, 1)).argmax(1)
    assert float((predicted == labels).float().mean()) >= 0.9


@pytest.mark.slow
def test_high_noise_denoiser_matches_the_shipped_gaussian(net: DigitsUNet, gaussian: Gaussian) -> None:
    """At high noise the data denoiser tends to the Gaussian one, D_G = mu + Sigma (Sigma + s^2 I)^-1 (x - mu)
    (docs/warm-start.md#mixtures-and-the-far-field: at high noise any data looks like its first two
    moments), so on inputs from N(mu, Sigma + s^2 I) the trained network must be close to D_G. Measured on
    the shipped weights (512 inputs per sigma): per-pixel RMS of D_net - D_G is 0.056, 0.055, 0.100 at
    sigma = 10, 20, 40, against 0.65 for the untrained network c_skip x (and for D = 0); the network's
    x-dependent part (D_net minus its batch mean) has cosine 0.87, 0.77, 0.77 with D_G - mu, where a
    response unrelated to Sigma would give ~0 (+-1/8 in 64 dimensions). The bounds (RMS <= 0.12 and <= 0.2
    x the untrained error; cosine >= 0.6) fail for wrong preconditioning, wrong or untrained weights, or a
    network that ignores x. The residual is network error: training samples sigma > 10 with probability
    0.2% (EDM's ln sigma ~ N(-1.2, 1.2^2)), and it grows to 0.17 at sigma = 80.
    """
    gen = torch.Generator().manual_seed(5)
    for sigma in (10.0, 20.0, 40.0):
        x = gaussian.sample(512, sigma, gen, dtype=torch.float64)
        s = torch.full((512,), sigma, dtype=torch.float64)
        d_g = gaussian(x, s)
        d_net = net(x, s).double()
        untrained = edm_preconditioning(s)[0].reshape(-1, 1, 1, 1) * x

        def rms(t: torch.Tensor) -> float:
            return float(t.flatten(1).square().mean(1).sqrt().mean())

        err, err_untrained = rms(d_net - d_g), rms(untrained - d_g)
        assert err <= 0.12 and err <= 0.2 * err_untrained, (sigma, err, err_untrained)
        response, expected = d_net - d_net.mean(0), d_g - gaussian.mean
        cosine = float((response * expected).sum() / (response.norm() * expected.norm()))
        assert cosine >= 0.6, (sigma, cosine)


# ---------------------------------------------------------------------- statistics and test split
def test_shipped_test_split(provenance: dict) -> None:
    test = load_digits_test_set()
    assert test.pixels.dtype == torch.uint8 and test.pixels.shape[1:] == (8, 8)
    assert int(test.pixels.max()) <= 16
    assert len(test) == provenance["data"]["n_test"] and len(torch.unique(test.indices)) == len(test)
    assert set(test.labels.tolist()) == set(range(10))
    images = test.images
    assert images.shape == (len(test), 1, 8, 8) and float(images.min()) >= -1 and float(images.max()) <= 1
    assert load_digits_gaussian().n_samples + len(test) == provenance["data"]["n_images"]


def test_shipped_gaussians_are_the_fits_of_the_training_split() -> None:
    sklearn = pytest.importorskip("sklearn.datasets")
    bunch = sklearn.load_digits()
    test = load_digits_test_set()
    train = np.setdiff1d(np.arange(len(bunch.target)), test.indices.numpy())
    x = bunch.images[train].reshape(len(train), 64) / 8.0 - 1.0  # independent NumPy float64 fit
    g = load_digits_gaussian()
    assert g.shape == (1, 8, 8) and g.representation == "dense" and g.scale == "[-1, 1]"
    np.testing.assert_allclose(g.mean.reshape(-1).numpy(), x.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.cov.dense().numpy(), np.cov(x, rowvar=False), rtol=0, atol=1e-12)
    mixture = load_digits_class_gaussians()
    assert len(mixture) == 10
    y = bunch.target[train]
    np.testing.assert_allclose(mixture.weights.numpy(), np.bincount(y) / len(y), rtol=1e-12)
    for k in (0, 7):
        xk = x[y == k]
        component = mixture.components[k]
        np.testing.assert_allclose(component.mean.reshape(-1).numpy(), xk.mean(0), atol=1e-12)
        np.testing.assert_allclose(component.cov.dense().numpy(), np.cov(xk, rowvar=False), atol=1e-12)


def test_class_gaussians_round_trip(tmp_path) -> None:
    mixture = load_digits_class_gaussians()
    path = tmp_path / "classes.npz"
    mixture.save(path)
    again = GaussianMixture.load(path)
    assert len(again) == len(mixture) and again.shape == mixture.shape
    torch.testing.assert_close(again.weights, mixture.weights, rtol=0, atol=0)
    for a, b in zip(again.components, mixture.components, strict=True):
        for attribute in ("n_samples", "scale", "source", "representation"):
            assert getattr(a, attribute) == getattr(b, attribute)
        torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=0)
        torch.testing.assert_close(a.cov.dense(), b.cov.dense(), rtol=0, atol=0)
    x = mixture.sample(8, 2.0, torch.Generator().manual_seed(6), dtype=torch.float64)
    s = torch.full((8,), 2.0, dtype=torch.float64)
    torch.testing.assert_close(again(x, s), mixture(x, s), rtol=0, atol=0)


def test_mixture_round_trip_every_representation(tmp_path) -> None:
    dense = anisotropic_mixture(6, 2, seed=1)
    lowrank = anisotropic_mixture(6, 1, rank=2, seed=2)
    variances = torch.linspace(0.1, 1, 6, dtype=torch.float64)
    diag = Gaussian.diagonal(torch.zeros(6, dtype=torch.float64), variances, source="diag")
    mixture = GaussianMixture([*dense.components, *lowrank.components, diag], [0.2, 0.3, 0.1, 0.4])
    mixture.save(tmp_path / "m.npz")
    again = GaussianMixture.load(tmp_path / "m.npz")
    assert [c.representation for c in again.components] == ["dense", "dense", "lowrank", "diagonal"]
    assert isinstance(again.components[2].cov, LowRankPlusIsotropic)
    assert isinstance(again.components[3].cov, Diagonal)
    x = mixture.sample(5, 0.5, torch.Generator().manual_seed(7), dtype=torch.float64)
    s = torch.full((5,), 0.5, dtype=torch.float64)
    torch.testing.assert_close(again(x, s), mixture(x, s), rtol=0, atol=0)
    torch.testing.assert_close(again.log_prob(x, 0.5), mixture.log_prob(x, 0.5), rtol=0, atol=0)


def test_loading_files_that_are_not_ours_raises_value_error(tmp_path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"definitely not an npz or safetensors file")
    bare = tmp_path / "bare.npy"
    np.save(bare, np.zeros(3))
    single = tmp_path / "single.npz"
    load_digits_gaussian().save(single)
    for path in (junk, bare, single):
        with pytest.raises(ValueError, match="not a gaussport Gaussian-mixture file"):
            GaussianMixture.load(path)
    with pytest.raises(ValueError, match="not a gaussport statistics file"):
        Gaussian.load(tmp_path / "junk.bin")
    # A mixture file is not a test split, and a classifier file is not a denoiser.
    load_digits_class_gaussians().save(tmp_path / digits_module.TEST_SET_FILE)
    with pytest.raises(ValueError, match="not a gaussport digits test-set file"):
        load_digits_test_set(directory=tmp_path)
    with digits_module.data_path(digits_module.CLASSIFIER_FILE) as clf_path:
        (tmp_path / digits_module.DENOISER_FILE).write_bytes(clf_path.read_bytes())
    with pytest.raises(ValueError, match="not a gaussport digits denoiser file"):
        load_digits_denoiser(directory=tmp_path)
    (tmp_path / digits_module.CLASSIFIER_FILE).write_bytes(junk.read_bytes())
    with pytest.raises(ValueError, match="not a gaussport digits classifier file"):
        load_digits_classifier(directory=tmp_path)


# ---------------------------------------------------------------------- classifier and Frechet distance
def test_shipped_classifier_accuracy(provenance: dict) -> None:
    test = load_digits_test_set()
    clf = load_digits_classifier()
    with torch.no_grad():
        accuracy = float((clf(test.images).argmax(1) == test.labels).float().mean())
    assert accuracy == pytest.approx(provenance["classifier"]["test_accuracy"], abs=1e-6)
    assert accuracy >= 0.95


def test_digits_frechet_distance_orders_real_gaussian_and_test_data(gaussian: Gaussian) -> None:
    test = load_digits_test_set()
    assert digits_frechet_distance(test.images) < 1e-8  # the reference set against itself
    sklearn = pytest.importorskip("sklearn.datasets")
    bunch = sklearn.load_digits()
    train = np.setdiff1d(np.arange(len(bunch.target)), test.indices.numpy())
    real = torch.from_numpy(bunch.images[train] / 8.0 - 1.0).float().unsqueeze(1)
    fake = gaussian.sample(len(train), generator=torch.Generator().manual_seed(8))
    d_real, d_gauss = digits_frechet_distance(real), digits_frechet_distance(fake)
    assert 0 < d_real < 0.5 * d_gauss
    metric = DigitsFrechet()  # what the harness keeps: files read once, the same numbers
    assert (metric(real), metric(fake)) == (d_real, d_gauss)
    feats = digits_features(real)
    assert feats.shape == (len(train), load_digits_classifier().feature_dim) and feats.dtype == torch.float64
    assert frechet_distance(feats, feats) < 1e-8


# ---------------------------------------------------------------------- the harness on the shipped model
@pytest.mark.slow
def test_teleport_beats_no_teleport_on_the_shipped_model_at_nfe_7() -> None:
    """Heun at NFE 7 on the shipped digits model, 8 seeds, through gaussport.digits.evaluator.

    Smoke test (16 seeds): trajectory error 1.62 without a teleport, 0.166 with a teleport to
    sigma = 2 (respaced), a ratio of ~10; 32 seeds gave 1.64 and 0.169. The per-seed errors vary by
    well under a factor 3 between such seed sets, so a ratio of 3 is a safe, still meaningful bound.
    RK4 at 4 steps per unit of lambda is within 7e-4 RMS of a twice-finer solve (measured), far
    below both errors.
    """
    ev = gaussport.digits.evaluator(seeds=range(8), reference_steps=4, frechet_metric=None)
    assert ev.shape == (1, 8, 8) and ev.frechet_metric is None
    plain = ev.evaluate("heun", 7)
    warm = ev.evaluate("heun", 7, teleport="respace", sigma_skip=2.0)
    assert plain.nfe == warm.nfe == 7
    assert warm.error * 3 < plain.error, (warm.error, plain.error)
    # By default the harness measures the Frechet distance with the digits metric.
    assert isinstance(gaussport.digits.evaluator(seeds=range(2)).frechet_metric, DigitsFrechet)


def test_shipped_model_card_names_the_current_modules() -> None:
    with digits_module.data_path("DIGITS_MODEL.md") as path:
        card = path.read_text()
    assert "`gaussport.digits.train.train_digits`" in card and "`gaussport.digits.load_digits_*`" in card
    assert "gaussport.models" not in card and "gaussport.metrics.digits" not in card


def test_shipped_networks_carry_the_checksum_of_their_weights() -> None:
    """A flipped byte in the weights of a shipped network is caught on load (docs/conventions.md#files)."""
    from safetensors import safe_open

    from gaussport.digits.files import CLASSIFIER_FILE, DENOISER_FILE, _digest, data_path

    for name in (DENOISER_FILE, CLASSIFIER_FILE):
        with data_path(name) as path, safe_open(str(path), framework="pt") as f:
            state = {key: f.get_tensor(key) for key in f.keys()}
            assert f.metadata().get("sha256") == _digest(state), name
