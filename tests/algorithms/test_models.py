"""The model zoo: shapes, names, and argument checks."""

import pytest
import torch
from torch import nn

from algorithms.models import MODELS, ModelSpec, build_model, mlp, small_cnn


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_maps_a_batch_to_logits(name):
    model, input_shape = build_model(name)
    assert input_shape == (1, 28, 28)
    assert model(torch.zeros(3, *input_shape)).shape == (3, 10)


def test_registered_names():
    assert set(MODELS) == {"cnn", "cnn_large", "mlp", "mlp_small"}


def test_small_cnn_layout():
    model = small_cnn(in_channels=3, num_classes=5, image_size=32, channels=(8,))
    kinds = [type(m) for m in model]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear]
    assert model[0].kernel_size == (3, 3) and model[0].padding == (1, 1)
    assert model[-1].in_features == 8 * 16 * 16
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


def test_cnn_large_and_mlp_small_widths():
    large, _ = build_model("cnn_large")
    assert [m.out_channels for m in large if isinstance(m, nn.Conv2d)] == [32, 64]
    small, _ = build_model("mlp_small")
    assert [m.out_features for m in small if isinstance(m, nn.Linear)] == [64, 10]


def test_mlp_flattens_first():
    model = mlp(input_dim=12, hidden=(4,), num_classes=3)
    assert isinstance(model[0], nn.Flatten)
    assert model(torch.zeros(2, 3, 4)).shape == (2, 3)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="cnn, cnn_large, mlp, mlp_small"):
        build_model("resnet")


@pytest.mark.parametrize("kwargs, field", [
    ({"in_channels": 0}, "in_channels"),
    ({"channels": ()}, "channels"),
    ({"channels": (16, -1)}, "channels"),
    ({"image_size": 2, "channels": (4, 4)}, "image_size"),
])
def test_small_cnn_rejects_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        small_cnn(**kwargs)


@pytest.mark.parametrize("shape", [(0, 28), (), (1, 8.0, 8)])
def test_build_model_rejects_bad_shape(shape):
    with pytest.raises(ValueError, match="input_shape"):
        build_model("mlp", shape)


def test_model_spec_needs_a_builder():
    with pytest.raises(ValueError, match="builder"):
        ModelSpec(None)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_build_for_digits_sized_inputs(name):
    model, shape = build_model(name, (1, 8, 8), 10)
    assert shape == (1, 8, 8)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_cnn_refuses_non_square_inputs():
    with pytest.raises(ValueError, match="square"):
        build_model("cnn", (1, 28, 20))
