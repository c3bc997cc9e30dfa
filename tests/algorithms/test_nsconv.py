"""NSConv (``algorithms/nsconv.py``): standardised, scaled filters on a dense kernel, zeros that stay zero, a
regrown zero that can grow, the module against ``ns_conv2d``, and ``gain`` as a parameter."""

import math

import pytest
import torch
import torch.nn.functional as F

from algorithms.nsconv import NS_EPS, NSConv2d, ns_conv2d, standardised_weight
from algorithms.params import ParamLayout

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _kernel(seed: int = 0, shape=(5, 3, 3, 3)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_dense_kernel_filters_have_zero_mean_and_the_gain_as_norm():
    """On a dense kernel w_hat[o] = gain[o] (w[o] - mean) / (std sqrt(n) + eps): mean 0, and the squared norm
    n * var(w_hat[o]) = gain[o]^2 * (std sqrt(n) / (std sqrt(n) + eps))^2."""
    weight = _kernel()
    gain = torch.tensor([0.5, 1.0, 1.5, 2.0, 3.0], dtype=torch.float64)
    flat = standardised_weight(weight, gain).reshape(5, -1)
    n = flat.shape[1]
    assert n == 27
    scale = weight.reshape(5, -1).std(dim=1, unbiased=False) * math.sqrt(n)
    assert torch.allclose(flat.mean(dim=1), torch.zeros(5, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(flat.pow(2).sum(dim=1), (gain * scale / (scale + NS_EPS)).pow(2), rtol=1e-12)


def test_zeros_stay_zero():
    weight = _kernel(1)
    mask = torch.rand(weight.shape, generator=torch.Generator().manual_seed(2)) < 0.3
    weight[mask] = 0.0
    hat = standardised_weight(weight, torch.ones(5, dtype=torch.float64))
    assert torch.equal(hat == 0, mask)


def test_a_regrown_zero_gets_the_gradient_gain_over_scale():
    """Filter w = (1, 2, 3, 0): the indicator removes the mean from the zero entry, so
    d w_hat[3] / d w[3] = gain / (std sqrt(n) + eps) exactly (w[3] = 0 kills the other terms);
    std = sqrt(1.25), n = 4."""
    weight = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]], dtype=torch.float64, requires_grad=True)
    gain = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)
    hat = standardised_weight(weight, gain)
    (grad,) = torch.autograd.grad(hat[0, 0, 1, 1], weight)
    assert grad[0, 0, 1, 1].item() == pytest.approx(1.5 / (math.sqrt(1.25) * 2 + NS_EPS), rel=1e-12)
    # and through a real convolution the zero entry's gradient is nonzero
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad(ns_conv2d(x, weight, None, gain).pow(2).sum(), weight)
    assert grad[0, 0, 1, 1].item() != 0.0 and math.isfinite(grad[0, 0, 1, 1].item())


def test_a_filter_of_equal_weights_stays_finite():
    hat = standardised_weight(torch.full((2, 1, 3, 3), 0.7), torch.ones(2))
    assert torch.isfinite(hat).all()


def test_module_equals_ns_conv2d_and_gain_is_a_parameter():
    torch.manual_seed(4)
    module = NSConv2d(4, 6, 3, stride=2, padding=1, groups=2)
    assert [name for name, _ in module.named_parameters()] == ["weight", "bias", "gain"]
    assert torch.equal(module.gain.detach(), torch.ones(6)) and module.gain.requires_grad
    with torch.no_grad():
        module.gain.uniform_(0.5, 2.0)
    x = torch.randn(3, 4, 7, 7)
    out = module(x)
    assert torch.equal(out, ns_conv2d(x, module.weight, module.bias, module.gain, module.stride,
                                      module.padding, module.dilation, module.groups))
    assert torch.equal(out, F.conv2d(x, standardised_weight(module.weight, module.gain), module.bias,
                                     stride=2, padding=1, groups=2))
    out.sum().backward()
    assert module.gain.grad is not None and module.gain.grad.abs().sum() > 0
    assert ParamLayout.of(module).prunable == (True, False, False)  # the weight only


def test_refuses_other_padding_modes():
    with pytest.raises(ValueError, match="padding_mode"):
        NSConv2d(1, 1, 3, padding=1, padding_mode="reflect")
