"""A small convolutional digit classifier: the project's own judge of generated samples.

Two stages of two 3x3 convolutions (28 -> 14 -> 7), a dense layer whose activations are the *features*
(the penultimate layer, where the Fréchet distance of `models.evaluation.mnist.sample_quality` is taken) and
the class logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.architectures.base import Architecture, check_image_size, image_size_field
from models.architectures.protocols import Classifier


@dataclass(frozen=True)
class DigitClassifierConfig:
    classes: int = 10
    in_channels: int = 1
    widths: tuple[int, int] = (32, 64)  # channels of the two stages
    feature_size: int = 128  # the penultimate layer
    dropout: float = 0.3  # before the last layer, in training only
    image_size: tuple[int, int] = image_size_field()

    def __post_init__(self) -> None:
        if self.classes < 2 or min(self.widths) < 1 or self.feature_size < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"invalid DigitClassifier config: {self}")
        check_image_size(self.image_size, 4)


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class DigitClassifier(Architecture, Classifier):
    name = "digit-classifier"
    config_class = DigitClassifierConfig
    config: DigitClassifierConfig

    def __init__(self, config: DigitClassifierConfig) -> None:
        super().__init__(config)
        w1, w2 = config.widths
        height, width = config.image_size
        self.body = nn.Sequential(
            _stage(config.in_channels, w1),  # (B, w1, H/2, W/2)
            _stage(w1, w2),  # (B, w2, H/4, W/4)
            nn.Flatten(),
            nn.Linear(w2 * (height // 4) * (width // 4), config.feature_size),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.feature_size, config.classes))

    @property
    def classes(self) -> int:
        return self.config.classes

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, feature_size): the penultimate layer."""
        return self.body(images)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, classes) class probabilities."""
        return torch.softmax(self.logits(images), dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images)
