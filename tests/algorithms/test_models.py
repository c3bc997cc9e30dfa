"""The model zoo: shapes, names, architectures, and argument checks."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from algorithms.models import (
    MODELS,
    ModelSpec,
    ResidualAdd,
    build_model,
    check_architecture,
    default_architecture,
    mlp,
    small_cnn,
)
from algorithms.nsconv import NSConv2d
from algorithms.params import FunctionalModel
from algorithms.profiling import ProfiledModel, profile_model, profile_named_model
from algorithms.registry import _MODELS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_maps_a_batch_to_logits(name):
    model, input_shape = build_model(name)
    assert input_shape == (1, 28, 28)
    assert model(torch.zeros(3, *input_shape)).shape == (3, 10)


def test_registered_names():
    assert set(MODELS) == {"cnn", "cnn_large", "cnn_ns", "cnn_femnist", "cnn_femnist_ns", "resnet_small", "mlp",
                           "mlp_small"}
    assert set(MODELS) == set(_MODELS)


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
    with pytest.raises(ValueError, match="cnn, cnn_femnist, cnn_femnist_ns, cnn_large, cnn_ns, mlp, mlp_small, "
                                         "resnet_small"):
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


# --- architectures -------------------------------------------------------------------------------------------

def _widths(model: nn.Module) -> tuple[int, ...]:
    """Output widths of every conv / linear but the classifier, in forward (registration) order, tied ResNet
    convs read once per block (its conv2)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    widths = [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
              for n, m in layers[:-1] if not n.endswith(("conv1", "proj"))]
    return tuple(widths)


@pytest.mark.parametrize("name, widths", [("cnn", (16, 32)), ("cnn_large", (32, 64)), ("cnn_ns", (16, 32)),
                                          ("cnn_femnist", (32, 64)), ("cnn_femnist_ns", (32, 64)),
                                          ("resnet_small", (16, 32, 64)), ("mlp", (200, 200)),
                                          ("mlp_small", (64,))])
def test_default_architecture_is_what_gets_built(name, widths):
    assert default_architecture(name) == widths
    assert _widths(build_model(name, (1, 8, 8))[0]) == widths


@pytest.mark.parametrize("name, architecture", [("cnn_femnist", (3, 7)), ("resnet_small", (2, 5, 9)),
                                                ("mlp", (11, 4)), ("cnn_ns", (1, 1))])
def test_architecture_round_trips_through_build_model(name, architecture):
    model, _ = build_model(name, (1, 8, 8), 10, architecture)
    assert _widths(model) == architecture
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert FunctionalModel(name, (1, 8, 8), 10, architecture).architecture == architecture


@pytest.mark.parametrize("architecture", [(32,), (32, 0), (32, 64, 2), (32, 6.0), "32,64", (True, 2)])
def test_bad_architecture_is_named(architecture):
    with pytest.raises(ValueError, match="architecture"):
        build_model("cnn_femnist", (1, 8, 8), 10, architecture)


def test_empty_architecture_means_registered():
    assert check_architecture("resnet_small", ()) == (16, 32, 64)
    assert check_architecture("mlp", [5, 6]) == (5, 6)


def test_cnn_femnist_is_the_authors_shape():
    """Two 5x5 convs of 32 and 64 with ReLU and 2x2 max pooling, global average pool, linear: on FEMNIST's
    62 classes its parameters are the 56,126 the authors' notebook reports."""
    model, _ = build_model("cnn_femnist", (1, 28, 28), 62)
    assert sum(p.numel() for p in model.parameters()) == 56126  # 832 + 51264 + 4030
    kinds = [type(m) for m in model]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
                     nn.Flatten, nn.Linear]
    assert model[0].kernel_size == (5, 5) and model[0].padding == (2, 2)
    ns, _ = build_model("cnn_femnist_ns", (1, 28, 28), 62)
    assert [type(m) for m in ns][0] is NSConv2d and sum(p.numel() for p in ns.parameters()) == 56126 + 96


def test_resnet_small_ties_each_blocks_convs_and_projection():
    model, _ = build_model("resnet_small", (1, 28, 28), 10, (4, 6, 8))
    assert not isinstance(model, nn.Sequential)
    block = model.blocks[1]
    assert (block.conv1.out_channels, block.conv2.out_channels, block.proj.out_channels) == (8, 8, 8)
    assert (block.conv1.in_channels, block.proj.in_channels, block.proj.kernel_size) == (6, 6, (1, 1))
    assert sum(isinstance(m, ResidualAdd) for m in model.modules()) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 1, 28, 28)
    stem = model.stem_relu(model.stem(x))
    b0 = model.blocks[0]
    by_hand = torch.relu(b0.conv2(torch.relu(b0.conv1(stem))) + b0.proj(stem))
    assert torch.equal(model.blocks[0](stem), by_hand)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_functional_model_equals_the_module(name):
    """The flat-vector forward (direct steps, NSConv with its gain, or functional_call for the ResNet) and
    ``call_with`` compute what the module computes."""
    fm = FunctionalModel(name, (1, 8, 8), 10)
    w = fm.init_weights(3) + 0.01 * torch.randn(fm.size, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.nn.utils.vector_to_parameters(w, fm.module.parameters())
    expected = fm.module(x)
    assert torch.allclose(fm(w, x), expected, atol=1e-6)
    assert torch.allclose(fm.call_with(list(fm.layout.views(w).values()), x), expected, atol=1e-6)


def test_nsconv_is_its_own_step_and_uses_its_gain():
    fm = FunctionalModel("cnn_ns", (1, 8, 8), 10)
    assert [kind for kind, _, _ in fm._steps][:3] == ["nsconv", "plain", "plain"]
    assert fm.layout.names[:3] == ("0.weight", "0.bias", "0.gain")
    assert fm.layout.prunable[:3] == (True, False, False)
    w = fm.init_weights(0)
    gain = slice(fm.layout.offsets[2], fm.layout.offsets[2] + 16)
    w[gain] = torch.linspace(0.5, 2.0, 16)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.nn.utils.vector_to_parameters(w, fm.module.parameters())
    assert torch.allclose(fm(w, x), fm.module(x), atol=1e-6)
    plain = w.clone()
    plain[gain] = 1.0
    assert not torch.allclose(fm(plain, x), fm(w, x), atol=1e-3)


def test_resnet_small_profile_counts_the_residual_sums_and_the_skip_once():
    profile = profile_named_model("resnet_small", (1, 28, 28), 10)
    kinds = [layer.kind for layer in profile.layers]
    assert kinds.count("ResidualAdd") == 2 and kinds.count("Conv2d") == 7
    add = next(layer for layer in profile.layers if layer.kind == "ResidualAdd")
    assert (add.forward_flops, add.saved_activation_elems, add.io_elems) == (0, 0, 3 * 32 * 14 * 14)
    # each block input is read by conv1 and proj but saved once: the proj saves nothing new
    projections = [layer for layer in profile.layers if layer.name.endswith("proj")]
    assert [layer.saved_activation_elems for layer in projections] == [0, 0]
    # the stem output's gradient from proj is held through the first block's conv1..conv2 backward
    conv1 = next(layer for layer in profile.layers if layer.name == "blocks.0.conv1")
    assert conv1.backward_elems == 2 * 32 * 14 * 14 + 2 * 16 * 28 * 28 + 16 * 28 * 28


def test_forward_flops_of_a_pruned_architecture_equal_flop_counter():
    model, _ = build_model("resnet_small", (1, 28, 28), 10, (5, 9, 13))
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 28, 28))
    profile = profile_named_model("resnet_small", (1, 28, 28), 10, architecture=(5, 9, 13))
    assert profile.forward_flops_per_sample == counter.get_total_flops()


def test_nsconv_weight_derived_saved_bytes():
    """NSConv2d(2 -> 4, 3x3): 72 weights; three float copies, a bool mask and two per-filter vectors."""
    model = nn.Sequential(NSConv2d(2, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 25, 3))
    profile = profile_model(model, (2, 5, 5))
    assert profile.saved_weight_bytes == (3 * 72 + 2 * 4) * 4 + 72


class _Profiled(ProfiledModel):
    def __init__(self):
        self.model, self.local_steps, self.batch_size, self._profile = "mlp_small", 1, 1, None
        self.input_shape, self.num_classes = (1, 8, 8), 10


def test_profile_for_an_architecture():
    profiled = _Profiled()
    assert profiled.profile_for(()) is profiled.profile
    assert profiled.profile_for((32,)).params == 64 * 32 + 32 + 32 * 10 + 10
    assert profiled.profile_for((32,)) is profiled.profile_for((32,))
    assert profiled.profile.params == 4810
