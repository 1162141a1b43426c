"""The GPU budget's inputs: aten op counts measured on CPU stand for launch-bound GPU time."""
import torch
from torch import nn

from ldlm.tools.gpu_budget import count_ops


def step_ops(width: int, batch: int, layers: int) -> int:
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.GELU()) for _ in range(layers)])
    x = torch.randn(batch, width)
    return count_ops(lambda: net(x).square().mean().backward())


def test_an_op_count_includes_the_backward_and_depends_on_layers_not_on_width_or_batch():
    forward = count_ops(lambda: nn.Linear(8, 8)(torch.randn(2, 8)).sum())
    assert step_ops(8, 2, 2) > 2 * forward  # the backward's ops are counted too
    assert step_ops(8, 2, 2) == step_ops(64, 2, 2) == step_ops(8, 32, 2)
    assert step_ops(8, 2, 3) > step_ops(8, 2, 2)
