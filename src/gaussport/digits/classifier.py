"""A tiny CNN classifier for 8x8 digits whose penultimate features define a Frechet distance.

The Frechet Inception Distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule
Converge to a Local Nash Equilibrium") compares the Gaussian moments of a classifier's penultimate
features on generated and real images. Inception-v3 expects 299x299 natural images, so for 8x8
digits gaussport trains its own small classifier (:mod:`gaussport.digits.train`) and ships it
(:func:`gaussport.digits.load_digits_classifier`); :func:`gaussport.digits.digits_frechet_distance`
uses its :meth:`DigitsClassifier.features`. Numbers computed with it are an FID *analogue*, comparable
only with each other, never with published FIDs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DigitsClassifier"]


class DigitsClassifier(nn.Module):
    """Three 3x3 convolutions (8x8, 8x8, then 4x4 after pooling), global average pooling, a
    ``feature_dim``-wide SiLU layer (the features) and a linear read-out to ``num_classes`` logits.

    Args:
        img_channels: input channels (1 for the digits).
        channels: width of the convolutions.
        feature_dim: dimension of the penultimate features used by the Frechet distance.
        num_classes: number of classes.
        generator: source of the initial weights (seed 0 if ``None``); the global RNG is never used.

    Inputs are images ``[B, img_channels, H, W]`` in [-1, 1] (any H, W divisible by 2).
    """

    def __init__(
        self,
        *,
        img_channels: int = 1,
        channels: int = 32,
        feature_dim: int = 32,
        num_classes: int = 10,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = {
            "img_channels": img_channels,
            "channels": channels,
            "feature_dim": feature_dim,
            "num_classes": num_classes,
        }
        self.feature_dim = feature_dim
        with torch.device("meta"):  # allocate without drawing from the global RNG
            self.conv1 = nn.Conv2d(img_channels, channels, 3, padding=1)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
            self.conv3 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
            self.fc = nn.Linear(2 * channels, feature_dim)
            self.head = nn.Linear(feature_dim, num_classes)
        self.to_empty(device="cpu")
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform ``[-b, b]`` weights with ``b = sqrt(3 / fan_in)`` from ``generator``; zero biases."""
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                bound = math.sqrt(3.0 / module.weight[0].numel())
                u = torch.rand(module.weight.shape, generator=gen, dtype=torch.float64)
                module.weight.copy_((u * 2 - 1) * bound)
                module.bias.zero_()

    def features(self, x: Tensor) -> Tensor:
        """The penultimate features ``[B, feature_dim]`` (the input of the linear read-out)."""
        x = x.to(self.conv1.weight.dtype)
        h = F.silu(self.conv1(x))
        h = F.silu(self.conv2(h))
        h = F.avg_pool2d(h, 2)
        h = F.silu(self.conv3(h))
        return F.silu(self.fc(h.mean(dim=(2, 3))))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``[B, num_classes]``."""
        return self.head(self.features(x))
