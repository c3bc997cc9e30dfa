"""FedMef's batched kernel against its sequential ``fit``: mask and plain rounds, SAP on (both index formats)
and off, BaE's penalty; the rounds and models it leaves to ``fit``.

The bounds are ``test_batched.py``'s (``docs/learning.md``, "The batched kernels"); on an MLP the kernel is
also bit-identical to ``fit``, SAP and BaE included, and that is asserted too.
"""

import pytest
import torch

from algorithms.base import TaskConfig
from algorithms.batched import BackpropKernel, MarkedPenalty, batched_local_updates
from algorithms.fedmef import FedMef
from algorithms.local import ClientData, ModelState, derive_seed
from tests.algorithms.test_batched import _assert_close, _datas

DIGITS = (1, 8, 8)
SIZES = (45, 70, 33, 20)  # the last client holds fewer samples than a batch: it trains on batches of 20

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/algorithms/conftest.py


def _algorithm(**params) -> FedMef:
    return FedMef(**{"model": "mlp_small", "density": 0.3, "input_shape": DIGITS, **params})


def _both(algorithm, datas, mode, prune_step=1, steps=6, batch=32):
    """(``fit`` per client, ``batched_local_updates``) from one state of round ``prune_step`` and kind ``mode``;
    round 1 is within ``adjust_until``, so BaE marks weights when it runs."""
    start = algorithm.init(3)
    state = ModelState(start.weights, start.mask, prune_step)
    config = TaskConfig("train", steps, batch, mode=mode)
    assert isinstance(algorithm.batched_kernel(config), BackpropKernel)
    seeds = [derive_seed(11, k) for k in range(len(datas))]
    reference = [algorithm.fit(state, config, d, s) for d, s in zip(datas, seeds)]
    return state, reference, batched_local_updates(algorithm, state, config, datas, seeds)


def _check(state, reference, batched, identical=True):
    _assert_close(reference, batched)
    assert all(bool((r.delta[~state.mask] == 0).all()) for r in batched)  # the mask stays exact
    assert all(r.delta.abs().max() > 0 for r in batched)
    if identical:  # MLP units: the same bits as fit
        assert all(torch.equal(r.delta, b.delta) for r, b in zip(reference, batched))


SAP = [pytest.param(0.0, "bitmap", id="no-sap"), pytest.param(0.5, "bitmap", id="sap-bitmap"),
       pytest.param(0.5, "int32", id="sap-int32")]


@pytest.mark.parametrize("gamma, index", SAP)
@pytest.mark.parametrize("mode, optimizer", [("mask", "sgd"), ("plain", "momentum"), ("plain", "adam")])
def test_mlp_rounds_match_fit(gamma, index, mode, optimizer):
    algorithm = _algorithm(sap_gamma=gamma, sap_index=index, optimizer=optimizer)
    _check(*_both(algorithm, _datas(DIGITS, SIZES), mode))


def test_sap_takes_each_clients_own_top_k_ties_included():
    """Inputs on a grid of nine values tie at SAP's threshold: the kernel keeps the entries ``fit`` keeps. SAP
    changes the update (so the comparison is not that of plain backprop)."""
    g = torch.Generator().manual_seed(1)
    datas = [ClientData(torch.randint(-4, 5, (n, *DIGITS), generator=g) / 4.0, torch.randint(0, 10, (n,), generator=g))
             for n in SIZES]
    _, sap, batched = _both(_algorithm(sap_gamma=0.7), datas, "plain")
    assert all(torch.equal(r.delta, b.delta) for r, b in zip(sap, batched))
    _, plain, _ = _both(_algorithm(sap_gamma=0.0), datas, "plain")
    assert all(not torch.equal(a.delta, b.delta) for a, b in zip(sap, plain))


@pytest.mark.parametrize("penalty", ["squared", "unsquared"])
@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_bae_every_round_matches_fit(penalty, gamma):
    algorithm = _algorithm(bae_rounds="every", bae_penalty=penalty, bae_lambda=0.5, sap_gamma=gamma)
    datas = _datas(DIGITS, SIZES)
    state, reference, batched = _both(algorithm, datas, "mask")
    _check(state, reference, batched)
    _, without, _ = _both(_algorithm(bae="off", sap_gamma=gamma), datas, "mask")
    assert all(not torch.equal(a.delta, b.delta) for a, b in zip(batched, without))  # the penalty acted


def test_bae_marks_nothing_past_the_adjustments():
    """With ``bae_rounds="every"``, a round past ``adjust_until`` marks no weight (f_decay = 0): no penalty."""
    algorithm = _algorithm(bae_rounds="every", adjust_until=4)
    kernel, state = algorithm.batched_kernel(TaskConfig("train", 2, 8, mode="plain")), algorithm.init(0)
    assert isinstance(kernel.penalty(ModelState(state.weights, state.mask, 1)), MarkedPenalty)
    assert kernel.penalty(ModelState(state.weights, state.mask, 5)) is None
    assert _algorithm().batched_kernel(TaskConfig("train", 2, 8, mode="plain")).penalty is None  # BaE: adjust


@pytest.mark.parametrize("mode", ["mask", "plain"])
def test_a_conv_model_without_sap_matches_fit(mode):
    algorithm = _algorithm(model="cnn", sap_gamma=0.0, optimizer="momentum")
    _check(*_both(algorithm, _datas(DIGITS, SIZES), mode, steps=3), identical=False)


def test_rounds_and_models_the_kernel_leaves_to_fit():
    plain = TaskConfig("train", 3, 8, mode="plain")
    assert _algorithm().batched_kernel(TaskConfig("train", 3, 8, mode="adjust")) is None
    assert _algorithm(bae="off").batched_kernel(TaskConfig("train", 3, 8, mode="adjust")) is None
    assert _algorithm().batched_kernel(TaskConfig("train", 3, 8)) is None  # no mode: fit reads the state's
    assert _algorithm(model="cnn", sap_gamma=0.5).batched_kernel(plain) is None
    assert _algorithm(model="cnn_ns", sap_gamma=0.5).batched_kernel(plain) is None
    assert isinstance(_algorithm(model="cnn", sap_gamma=0.0).batched_kernel(plain), BackpropKernel)
    # NSConv is not batched at all: the kernel computes no client and every client runs fit
    algorithm = _algorithm(model="cnn_ns", sap_gamma=0.0)
    state, datas = algorithm.init(0), _datas(DIGITS, (20, 24))
    assert algorithm.batched_kernel(plain).run(state, plain, datas, [1, 2]) == [None, None]
    got = batched_local_updates(algorithm, state, plain, datas, [1, 2])
    want = [algorithm.fit(state, plain, d, s) for d, s in zip(datas, [1, 2])]
    assert all(torch.equal(g.delta, w.delta) for g, w in zip(got, want))
    # a kernel asked for SAP on a conv model declines every client rather than compute something else
    cnn = _algorithm(model="cnn")
    kernel = BackpropKernel(cnn.functional_model, cnn.step, sap_gamma=0.5)
    assert kernel.run(cnn.init(0), plain, datas, [1, 2]) == [None, None]
