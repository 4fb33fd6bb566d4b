"""CancerNet: the small depthwise-separable CNN of the PyImageSearch IDC tutorial.

Three stages of 3x3 depthwise-separable convolution -> ReLU -> batch norm (1, 2 and 3 blocks with
32, 64 and 128 filters), each followed by 2x2 max pooling and dropout 0.25; then a dense head
(256 units, ReLU, batch norm, dropout 0.5) and a linear layer over the classes (softmax is applied
by the loss and by the predictor).

The original flattens the last feature map of a 48x48 input. Here the map is average-pooled to a
fixed ``head_grid x head_grid`` grid first (6x6, which is the map size for 50x50 inputs, so IDC
patches are handled exactly as in the original), which keeps the head small for larger inputs
such as 224x224 BreakHis images.
"""

from __future__ import annotations

import torch
from torch import nn


class SeparableConv2d(nn.Sequential):
    """3x3 depthwise convolution followed by a 1x1 pointwise convolution (Keras SeparableConv2D)."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                padding=kernel_size // 2,
                groups=in_channels,
                bias=False,
            ),
            nn.Conv2d(in_channels, out_channels, 1, bias=True),
        )


def _stage(in_channels: int, out_channels: int, blocks: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(blocks):
        layers += [
            SeparableConv2d(in_channels if i == 0 else out_channels, out_channels),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(out_channels),
        ]
    layers += [nn.MaxPool2d(2), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class CancerNet(nn.Module):
    """The CancerNet classifier.

    Parameters
    ----------
    num_classes
        Number of output logits.
    in_chans
        Input channels (3 for RGB).
    widths, depths
        Filters and separable-conv blocks per stage.
    hidden
        Units of the dense layer.
    head_grid
        Side of the pooled grid fed to the dense head.

    Examples
    --------
    >>> import torch
    >>> net = CancerNet(num_classes=2)
    >>> net(torch.zeros(4, 3, 50, 50)).shape
    torch.Size([4, 2])
    """

    def __init__(
        self,
        *,
        num_classes: int = 2,
        in_chans: int = 3,
        widths: tuple[int, ...] = (32, 64, 128),
        depths: tuple[int, ...] = (1, 2, 3),
        hidden: int = 256,
        head_grid: int = 6,
        dropout: float = 0.25,
        head_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        stages = []
        channels = in_chans
        for width, depth in zip(widths, depths, strict=True):
            stages.append(_stage(channels, width, depth, dropout))
            channels = width
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(head_grid)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * head_grid * head_grid, hidden),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Dropout(head_dropout),
        )
        self.classifier = nn.Linear(hidden, num_classes)
        self.num_classes = num_classes
        #: parameter-name prefixes of the dense head (stage 1 of fine-tuning trains only these)
        self.head_prefixes: tuple[str, ...] = ("head", "classifier")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional feature map (used by Grad-CAM)."""
        return self.features(x)

    def forward_head(self, features: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Logits from a feature map (the dense layer's output with ``pre_logits``)."""
        embedding = self.head(self.pool(features))
        return embedding if pre_logits else self.classifier(embedding)

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The dense layer's output before the classifier (the embeddings of the SVM hybrid)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
