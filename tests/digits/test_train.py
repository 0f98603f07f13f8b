"""Tests of the digits training code (tiny configurations; the shipped run is in DIGITS_MODEL.md)."""

from __future__ import annotations

import numpy as np
import torch

from gaussport.digits.train import DenoiserConfig, _lr_at, stratified_split, train_denoiser

TINY = {"model_channels": 8, "emb_dim": 16, "attention_heads": 2}


def test_stratified_split_is_a_seeded_per_class_partition() -> None:
    labels = np.repeat(np.arange(4), [10, 11, 25, 3])
    train, test = stratified_split(labels, 0.2, seed=3)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.union1d(train, test), np.arange(labels.size))
    # round(0.2 * n) per class: 2, 2, 5, 1.
    assert np.bincount(labels[test], minlength=4).tolist() == [2, 2, 5, 1]
    again = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=4)[1], test)


def test_learning_rate_schedule() -> None:
    cfg = DenoiserConfig(steps=100, lr=1.0, warmup_steps=10, final_lr_fraction=0.1)
    assert _lr_at(0, cfg) == 0.1 and _lr_at(9, cfg) == 1.0  # linear warm-up
    assert _lr_at(10, cfg) == 1.0  # cosine starts at the peak
    assert abs(_lr_at(55, cfg) - 0.55) < 1e-12  # half way: (1 + 0.1) / 2
    assert abs(_lr_at(100, cfg) - 0.1) < 1e-12  # ends at final_lr_fraction * lr


def test_train_denoiser_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8, generator=gen) * 2 - 1
    y = torch.randint(0, 10, (40,), generator=gen)
    cfg = DenoiserConfig(steps=3, batch_size=16, warmup_steps=2, network=TINY)
    state = torch.get_rng_state()
    net_a, record = train_denoiser(x, y, seed=1, config=cfg, disable=True)
    assert torch.equal(torch.get_rng_state(), state)
    net_b, _ = train_denoiser(x, y, seed=1, config=cfg, disable=True)
    net_c, _ = train_denoiser(x, y, seed=2, config=cfg, disable=True)
    a, b, c = net_a.state_dict(), net_b.state_dict(), net_c.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert record["steps"] == 3 and np.isfinite(record["final_loss"])
    assert not net_a.training and not any(p.requires_grad for p in net_a.parameters())
