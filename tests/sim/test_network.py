"""The simulated network: exact link times, loss, duty cycle, M/M/1 queueing at a gateway, and the
device side (``DeviceLink``): one process per task, lost uploads, silences."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.core.kernel import Kernel
from fleet.core.messages import Update
from fleet.core.wire import encoded_size_bytes
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
    kernel.env.process(net.upload(msg))
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
    kernel.env.process(net.upload(msg))
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
        kernel.env.process(net.upload(_update(device, 10)))
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
            env.process(net.upload(msg))

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


# --- the device side: ``DeviceLink`` ---------------------------------------------------------------------
def _task(device, task_id=0):
    from fleet.core.messages import Task

    return Task(task_id, device, 0, 0, "train", 1, 1, 100, 1000, 64, None, 10)


def test_a_task_continues_as_the_devices_work_in_the_process_that_delivered_it(kernel):
    """One SimPy process per task: the download, the device's work and its upload."""
    profiles = make_profiles(1, latency_s=0.5, loss_prob=0.0)
    net = make_network(kernel, profiles)
    env, seen = kernel.env, []
    net.attach_server(lambda m, d: seen.append(("server", env.now, env.active_process)), lambda m, d: None)

    def device(task, delivery):
        seen.append(("device", env.now, env.active_process))
        yield env.timeout(2.0)
        up = yield from net.upload(_update(task.device, 10, task.task_id))
        seen.append(("uploaded", env.now, up))

    net.attach_devices(device)
    process = net.send(_task(0))
    env.run()
    (_, down_s, p1), (_, server_s, p2), (_, up_s, delivery) = seen
    assert p1 is p2 is process and process.value.sent_s == 0.0  # the process returns the download's
    assert down_s > 0.5 and server_s == up_s > down_s + 2.5
    assert delivery.sent_s == down_s + 2.0 and delivery.queue_s == 0.0


def test_an_upload_lost_beyond_max_attempts_returns_none_and_tells_the_server(kernel):
    profiles = make_profiles(1, latency_s=0.0, loss_prob=0.999)
    net = make_network(kernel, profiles, max_attempts=1)
    lost, got = [], []
    net.attach_server(lambda m, d: None, lambda m, dev: lost.append((m.task_id, dev)))

    def device():
        got.append((yield from net.upload(_update(0, 10, task_id=7))))

    kernel.env.process(device())
    kernel.env.run()
    assert got == [None] and lost == [(7, 0)]


def test_a_silence_reaches_the_server_after_exactly_the_delay_over_no_link(kernel):
    from fleet.core.messages import Leave

    net = make_network(kernel, make_profiles(1))
    heard = []
    net.attach_server(lambda m, d: heard.append((kernel.env.now, m, d)), lambda m, d: None)
    kernel.env.timeout(1.5).callbacks.append(lambda _e: net.report_silence(Leave(0, 3, 0, "offline"), 30.0))
    kernel.env.run()
    ((t, msg, delivery),) = heard
    assert t == 31.5 and msg == Leave(0, 3, 0, "offline")
    assert tuple(delivery) == (31.5, 0.0, 0.0, 0)
