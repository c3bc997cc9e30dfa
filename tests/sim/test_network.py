"""The simulated network: exact link times, loss, duty cycle, and M/M/1 queueing at a gateway."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.core.kernel import Kernel
from fleet.core.messages import Update, encoded_size_bytes
from tests.helpers import make_network, make_profiles


def _update(device, payload_bytes, task_id=0):
    return Update(task_id, device, 0, 0, 1.0, 0.0, 0.0, payload_bytes)


def test_one_message_takes_latency_plus_serialization_plus_backhaul(kernel):
    profiles = make_profiles(1, up_bit_per_s=1e6, down_bit_per_s=1e6, latency_s=0.02,
                             loss_prob=0.0)
    net = make_network(kernel, profiles, channels=1, backhaul_latency_s=0.01,
                       backhaul_bit_per_s=1e8)
    got = []
    net.attach_server(lambda m, d: got.append((kernel.env.now, d)), lambda m, d: None)
    msg = _update(0, 100_000)
    net.send(msg, 0, to_server=True)
    kernel.env.run()
    size = encoded_size_bytes(msg)
    expected = 8 * size / 1e6 + 0.02 + 0.01 + 8 * size / 1e8
    (t, delivery), = got
    assert t == pytest.approx(expected, rel=1e-12)
    assert delivery.queue_s == 0.0 and delivery.size_bytes == size


def test_duty_cycle_stretches_a_lorawan_transfer():
    kernel = Kernel(seed=1)
    profiles = make_profiles(1, "mcu_mid", "lorawan", up_bit_per_s=5_500.0, latency_s=0.0,
                             loss_prob=0.0)
    net = make_network(kernel, profiles)
    got = []
    net.attach_server(lambda m, d: got.append(kernel.env.now), lambda m, d: None)
    msg = _update(0, 10_000)
    net.send(msg, 0, to_server=True)
    kernel.env.run()
    p = profiles[0]
    frames = -(-encoded_size_bytes(msg) // p.max_frame_payload_bytes)
    airtime = 8 * (encoded_size_bytes(msg) + frames * p.frame_overhead_bytes) / 5_500.0
    # duty cycle 1 %: silence of 99x each frame's airtime after every frame but the last
    assert got[0] > 50 * airtime
    assert got[0] < airtime / p.duty_cycle


def test_a_message_lost_beyond_max_attempts_reaches_the_loss_handler():
    kernel = Kernel(seed=3)
    profiles = make_profiles(200, loss_prob=0.5, latency_s=0.0)
    net = make_network(kernel, profiles, max_attempts=2, retry_backoff_s=0.0)
    delivered, lost = [], []
    net.attach_server(lambda m, d: delivered.append(m), lambda m, dev: lost.append(dev))
    for device in range(200):
        net.send(_update(device, 10), device, to_server=True)
    kernel.env.run()
    assert len(delivered) + len(lost) == 200
    # P(lost) = 0.5 ** 2 = 0.25; binomial sd with n=200 is ~6
    assert 25 <= len(lost) <= 75


def _gateway_run(lam, n, seed, mean_service_s=1.0):
    """Feed ``n`` Poisson(lam) messages with exponential sizes to a one-channel gateway.

    Returns (inter-arrival gaps, service times, measured sojourn times), all in seconds.
    """
    rate_bit_per_s = 8e6
    kernel = Kernel(seed=11)
    profiles = make_profiles(1, up_bit_per_s=rate_bit_per_s, latency_s=0.0, loss_prob=0.0)
    net = make_network(kernel, profiles, channels=1)
    sojourn = []
    net.attach_server(lambda m, d: sojourn.append(d.link_s + d.queue_s), lambda m, d: None)
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1 / lam, n)
    sizes = rng.exponential(mean_service_s * rate_bit_per_s / 8, n).astype(np.int64)
    msgs = [_update(0, int(size)) for size in sizes]
    service = np.array([8 * encoded_size_bytes(m) / rate_bit_per_s for m in msgs])

    def source(env):
        for gap, msg in zip(gaps.tolist(), msgs):
            yield env.timeout(gap)
            net.send(msg, 0, to_server=True)

    kernel.env.process(source(kernel.env))
    kernel.env.run()
    return gaps, service, np.array(sojourn)


def test_gateway_queue_is_fifo_lindley_exact():
    """Each message's sojourn equals Lindley's recursion W' = max(0, W + S - A) plus S."""
    gaps, service, sojourn = _gateway_run(lam=0.8, n=5_000, seed=2)
    wait, expected = 0.0, np.empty_like(service)
    for i in range(len(service)):
        expected[i] = wait + service[i]
        if i + 1 < len(service):
            wait = max(0.0, wait + service[i] - gaps[i + 1])
    np.testing.assert_allclose(sojourn, expected, rtol=1e-9, atol=1e-6)


@pytest.mark.slow
def test_gateway_queue_reproduces_mm1_mean_sojourn():
    """Poisson arrivals, exponential service, one channel, rho = 0.8: E[T] = 1 / (mu - lambda).

    At rho = 0.8 the mean of correlated sojourns converges slowly (relative s.d. about
    2 % at 2e5 customers), hence 1e6 customers: s.d. about 0.9 %.
    """
    lam, mu = 0.8, 1.0
    _, service, sojourn = _gateway_run(lam=lam, n=1_000_000, seed=5)
    assert float(np.mean(service)) == pytest.approx(1 / mu, rel=0.005)
    assert float(np.mean(sojourn)) == pytest.approx(1 / (mu - lam), rel=0.02)
