"""The tutorial's LeNet, hand-written exactly as in PyTorch's "Neural Networks" tutorial: the oracle."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.spec.network import LENET_EXAMPLE

LENET_SPEC = LENET_EXAMPLE


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))  # (N, 6, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 16, 5, 5)
        x = torch.flatten(x, 1)  # (N, 400)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


RESIDUAL_SPEC = {
    "name": "ResBlock",
    "input_shape": [3, 8, 8],
    "layers": [
        {"name": "stem", "type": "Conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"name": "a", "type": "relu"},
        {"name": "conv_b", "type": "Conv2d", "in_channels": 8, "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"name": "bn", "type": "BatchNorm2d", "num_features": 8},
        {"name": "sum", "type": "add", "inputs": ["a", "bn"]},
        {"type": "relu"},
        {"type": "adaptive_avg_pool2d", "output_size": 1},
        {"type": "flatten", "start_dim": 1},
        {"name": "head", "type": "Linear", "in_features": 8, "out_features": 4},
    ],
}


class ResBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.conv_b = nn.Conv2d(8, 8, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.stem(x))
        x = F.relu(a + self.bn(self.conv_b(a)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
