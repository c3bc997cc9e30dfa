"""Reaching Ray (``fleet.learning.ray_cluster``): which address a run joins, what answers there (checked before
Ray is asked: a web server is not a Ray cluster, a silent port is one line), ``auto`` without an instance, a
refused token, and a SIGTERM while joining. No Ray instance is started here."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading

import pytest

from fleet.learning.backends import BackendUnavailable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_address_comes_from_the_scenario_then_the_environment(monkeypatch):
    pytest.importorskip("ray")
    from fleet.learning.ray_cluster import _probe, ray_address

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    assert ray_address("head:6379") == ("head:6379", "executor.ray_address")
    assert ray_address(None) == ("10.0.0.7:6379", "RAY_ADDRESS")
    assert ray_address("local") == (None, "")  # this machine, whatever the environment says
    monkeypatch.delenv("RAY_ADDRESS")
    assert ray_address(None) == (None, "")
    with pytest.raises(BackendUnavailable, match="RAY_ADDRESS 127.0.0.1:.*no Ray cluster answers"):
        _probe(f"127.0.0.1:{_free_port()}", "RAY_ADDRESS", 1.0)
    with pytest.raises(BackendUnavailable, match="expected host:port"):
        _probe("head-without-port", "executor.ray_address", 1.0)


# --- what answers at a cluster address (no Ray needed) --------------------------------------------------------
def _serve_once(reply: bytes | None):
    """A TCP server on loopback that accepts one connection and answers ``reply`` to whatever it reads first (None:
    says nothing and holds the connection open for 5 s); its address."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        conn, _ = server.accept()
        with conn, server:
            conn.recv(64)
            if reply is None:
                conn.settimeout(5.0)
                try:
                    conn.recv(64)
                except OSError:
                    pass
            else:
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{server.getsockname()[1]}"


def test_an_address_that_answers_but_not_as_ray_is_refused_at_once():
    from fleet.learning.ray_cluster import _probe, check_cluster

    address = _serve_once(b"HTTP/1.0 400 Bad request version\r\n\r\n")  # a web server, say the dashboard's port
    with pytest.raises(BackendUnavailable, match=r"executor.ray_address 127.0.0.1:\d+: not a Ray cluster \(it does "
                                                 r"not speak gRPC; it answered 'HTTP/1.0'\)"):
        check_cluster(address)
    silent = _serve_once(None)
    with pytest.raises(BackendUnavailable, match="no Ray cluster answers within 1 s .something accepts connections"):
        _probe(silent, "RAY_ADDRESS", 1.0)
    grpc = _serve_once(bytes([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]))  # an HTTP/2 server's SETTINGS frame
    _probe(grpc, "RAY_ADDRESS", 5.0)


def test_nothing_is_probed_for_a_ray_started_here(monkeypatch):
    from fleet.learning import ray_cluster

    monkeypatch.setattr(ray_cluster, "_probe", lambda *a: pytest.fail("probed"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_cluster.check_cluster(None)
    ray_cluster.check_cluster("local")


def test_auto_without_a_ray_instance_here_is_refused_at_once(tmp_path, monkeypatch):
    from fleet.learning import ray_cluster

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setattr(ray_cluster, "_gcs_running", lambda: False)
    with pytest.raises(BackendUnavailable, match="executor.ray_address auto: no Ray instance runs on this machine"):
        ray_cluster.check_cluster("auto")
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6379")  # what `ray start --head` leaves
    ray_cluster.check_cluster("auto")


class _RefusingRay:
    """``ray`` as far as ``_join`` uses it: ``init`` writes to file descriptor 2 as Ray's C++ core does, then fails."""

    def __init__(self, lines: list[str], failure: BaseException | None):
        self.lines, self.failure = lines, failure

    def init(self, address, **options):
        for line in self.lines:
            os.write(2, line.encode())
        if self.failure is not None:
            raise self.failure


RAY_LOG = "[2026-12-03 15:49:56,855 W 29091 29091] gcs_client.cc:210: Failed to get cluster ID from GCS server: "


def test_a_refused_token_is_one_line_saying_how_to_give_one(capfd):
    from fleet.learning.ray_cluster import _join

    ray = _RefusingRay([RAY_LOG + "InvalidAuthToken: Authentication token is missing or incorrect\n"] * 20
                       + ["a line another thread printed meanwhile\n"],
                       ConnectionError("Failed to connect to Ray cluster at 10.0.0.7:6379"))
    with pytest.raises(BackendUnavailable) as caught:
        _join(ray, "10.0.0.7:6379", "RAY_ADDRESS", {})
    assert str(caught.value) == (
        "cannot join the Ray cluster at 10.0.0.7:6379 (RAY_ADDRESS): it refused this process's token (token "
        "authentication, Ray's default): set RAY_AUTH_MODE=token, with the cluster's token in RAY_AUTH_TOKEN or in "
        "~/.ray/auth_token (`ray get-auth-token` on the head prints it)")
    assert capfd.readouterr().err == "a line another thread printed meanwhile\n"  # Ray's retries are not shown


def test_a_join_keeps_what_ray_printed_and_other_failures_go_through(capfd):
    from fleet.learning.ray_cluster import _join

    _join(_RefusingRay([RAY_LOG + "a transient retry\n"], None), "10.0.0.7:6379", "RAY_ADDRESS", {})
    assert capfd.readouterr().err == RAY_LOG + "a transient retry\n"  # joined: nothing hidden
    with pytest.raises(ConnectionError, match="Failed to connect"):
        _join(_RefusingRay([RAY_LOG + "Timed out\n"], ConnectionError("Failed to connect to Ray cluster")),
              "10.0.0.7:6379", "RAY_ADDRESS", {})
    assert capfd.readouterr().err == ""


def test_a_sigterm_while_joining_is_not_reported_as_a_failed_join(monkeypatch):
    """SIGTERM's handler exits with the signal's number (``_exit_on_sigterm``); that is the process stopping."""
    ray = pytest.importorskip("ray")
    from fleet.learning import ray_cluster

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a process that has not joined yet
    monkeypatch.setattr(ray_cluster, "_probe", lambda *a: None)
    monkeypatch.setattr(ray_cluster, "_join", lambda *a: ray_cluster._exit_on_sigterm(signal.SIGTERM, None))
    with pytest.raises(SystemExit) as stopped:
        ray_cluster.connect("10.0.0.7:6379")
    assert stopped.value.code == signal.SIGTERM
    monkeypatch.setattr(ray_cluster, "_join", lambda *a: sys.exit("Ray: cannot reach the GCS"))
    with pytest.raises(BackendUnavailable, match=r"cannot join the Ray cluster at 10.0.0.7:6379 "
                                                 r"\(executor.ray_address\): Ray: cannot reach the GCS"):
        ray_cluster.connect("10.0.0.7:6379")
