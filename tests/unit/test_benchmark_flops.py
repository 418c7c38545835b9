"""The benchmarks' FLOP counter: torch's formulas, and it survives autograd.grad w.r.t. a module's input leaf."""

import torch

from benchmarks.flops import count_flops


def test_a_matmul_and_a_convolution_count_by_their_formulas() -> None:
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    out, flops = count_flops(lambda: a @ b)
    assert torch.equal(out, a @ b)
    assert flops == 2 * 3 * 5 * 7
    conv = torch.nn.Conv2d(2, 4, 3, padding=1, bias=False)
    _, flops = count_flops(lambda: conv(torch.randn(1, 2, 8, 8)))
    assert flops == 2 * (4 * 8 * 8) * (2 * 3 * 3)


def test_grad_with_respect_to_the_leaf_a_module_was_called_on_is_counted() -> None:
    """The official sampler's guidance: autograd.grad(‖f(x) − y‖, x) with x a leaf fed to the module."""
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)

    def guided() -> torch.Tensor:
        x = torch.randn(1, 2, 8, 8).requires_grad_(True)
        return torch.autograd.grad(torch.linalg.norm(conv(x)), x)[0]

    grad, flops = count_flops(guided)
    assert grad.shape == (1, 2, 8, 8)
    forward = 2 * (2 * 8 * 8) * (2 * 3 * 3)
    assert flops >= 2 * forward  # the forward and at least the input gradient's convolution
