"""CURVE on the bridge: real ROUTER and DEALER sockets on loopback, the allow-list, the rejected-client
counter, the key tool (as a subprocess) and the rule for plain TCP."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from fleet.bridge import keys
from fleet.bridge.security import ClientSecurity, KeyFileError, ServerSecurity, check_plain_allowed

ROOT = Path(__file__).resolve().parents[2]
SILENCE_MS = 300  # how long a rejected client is watched for a frame that must never come


def _wait_for(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def keys_dir(tmp_path):
    """The hub's keys with one allowed device, ``dev1``."""
    keys.create_keys(tmp_path / "hub", server=True, devices=["dev1"])
    return tmp_path / "hub"


@pytest.fixture
def stranger(tmp_path):
    """A valid CURVE key pair made elsewhere, not in the hub's allow-list."""
    keys.create_keys(tmp_path / "elsewhere", devices=["stranger"])
    return tmp_path / "elsewhere"


@pytest.fixture
def hub(keys_dir):
    """(security, ROUTER, address): a CURVE ROUTER on a random loopback port."""
    ctx = zmq.Context()
    security = ServerSecurity(keys_dir)
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    security.apply(ctx, router)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    yield security, router, f"tcp://127.0.0.1:{port}"
    security.stop()
    ctx.term()


@pytest.fixture
def dealer():
    """Makes DEALERs (in a context of their own, like another machine), optionally with CURVE keys."""
    ctx = zmq.Context()
    sockets = []  # held here: a socket dropped by the test would be closed by the garbage collector

    def make(address, security=None):
        socket = ctx.socket(zmq.DEALER)
        sockets.append(socket)
        socket.linger = 0
        if security is not None:
            security.apply(socket)
        socket.connect(address)
        return socket

    yield make
    ctx.destroy(linger=0)


def _assert_rejected(security, router, *causes):
    """Some handshake failed with one of ``causes``, and the ROUTER stays silent."""
    assert _wait_for(lambda: any(security.rejected_by_cause.get(c, 0) for c in causes)), \
        security.rejected_by_cause
    assert router.poll(SILENCE_MS) == 0, "a rejected client delivered a frame"


# --- sockets ------------------------------------------------------------------------------------------

def test_allowed_device_exchanges_messages_with_curve_router(hub, dealer, keys_dir):
    security, router, address = hub
    client = dealer(address, ClientSecurity(keys_dir, "dev1"))
    client.send(b"hello")
    assert router.poll(5000)
    identity, payload = router.recv_multipart(copy=False)
    assert payload.bytes == b"hello"
    assert payload.get("User-Id") == "dev1"  # the authenticated device name, not what it claims
    router.send_multipart([identity.bytes, b"welcome"])
    assert client.poll(5000) and client.recv() == b"welcome"
    assert security.rejected == 0


def test_valid_key_not_in_allow_list_delivers_nothing_and_is_counted(hub, dealer, keys_dir, stranger):
    security, router, address = hub
    client = dealer(address, ClientSecurity.from_files(stranger / "stranger.key_secret",
                                                       keys_dir / "server.key"))
    client.send(b"let me in")
    _assert_rejected(security, router, "unknown_key")
    assert security.rejected >= 1


def test_plain_dealer_cannot_talk_to_curve_router(hub, dealer):
    security, router, address = hub
    dealer(address).send(b"plain hello")
    # Both ends see the mechanism mismatch; when the client hangs up first (about 1 time in 3 here)
    # the hub sees only an aborted handshake, and the client does not come back.
    _assert_rejected(security, router, "not_curve", "aborted")


def test_wrong_server_key_is_rejected(hub, dealer, keys_dir, stranger):
    security, router, address = hub
    shutil.copy(stranger / "stranger.key", stranger / "server.key")  # not the hub's public key
    shutil.copy(keys_dir / "dev1.key_secret", stranger / "dev1.key_secret")
    dealer(address, ClientSecurity(stranger, "dev1")).send(b"hello")
    _assert_rejected(security, router, "bad_crypto")


def test_copying_a_public_certificate_into_allowed_admits_the_device(hub, dealer, keys_dir, stranger):
    security, router, address = hub
    shutil.copy(stranger / "stranger.key", keys_dir / "allowed" / "stranger.key")
    assert security.reload() == 2
    client = dealer(address, ClientSecurity.from_files(stranger / "stranger.key_secret",
                                                       keys_dir / "server.key"))
    client.send(b"hello")
    assert router.poll(5000)
    _, payload = router.recv_multipart(copy=False)
    assert payload.get("User-Id") == "stranger"


def test_apply_refuses_a_bound_socket_and_a_second_zap_handler(keys_dir):
    ctx = zmq.Context()
    first, second = ServerSecurity(keys_dir), ServerSecurity(keys_dir)
    bound, other, third = (ctx.socket(zmq.ROUTER) for _ in range(3))
    try:
        bound.bind("inproc://bound")
        with pytest.raises(RuntimeError, match="before bind"):
            first.apply(ctx, bound)
        first.apply(ctx, other)
        with pytest.raises(RuntimeError, match="ZAP handler"):
            second.apply(ctx, third)
        with pytest.raises(RuntimeError, match="already"):
            first.apply(ctx, third)
    finally:
        first.stop()  # closes ``other``: an open CURVE socket must not outlive its ZAP handler
        second.stop()
        assert other.closed
        ctx.destroy(linger=0)


def test_repr_never_shows_secret_keys(keys_dir):
    server, client = ServerSecurity(keys_dir), ClientSecurity(keys_dir, "dev1")
    for key_file, text in (("server.key_secret", repr(server)), ("dev1.key_secret", repr(client))):
        _, secret = zmq.auth.load_certificate(keys_dir / key_file)
        assert secret.decode() not in text


# --- key files ---------------------------------------------------------------------------------------

def test_missing_key_files_are_named_with_the_fix(tmp_path, keys_dir):
    with pytest.raises(KeyFileError, match=r"server\.key_secret.*python -m fleet\.keys"):
        ServerSecurity(tmp_path / "nothing")
    with pytest.raises(KeyFileError, match=r"nobody\.key_secret.*python -m fleet\.keys"):
        ClientSecurity(keys_dir, "nobody")
    device = tmp_path / "device"
    device.mkdir()
    shutil.copy(keys_dir / "dev1.key_secret", device)
    with pytest.raises(KeyFileError, match=r"server public key not found: .*server\.key"):
        ClientSecurity(device, "dev1")
    shutil.rmtree(keys_dir / "allowed")
    with pytest.raises(KeyFileError, match=r"allow-list folder not found"):
        ServerSecurity(keys_dir)
    assert issubclass(KeyFileError, OSError)  # fleet.app.simulation reports OSError as a scenario error


def test_malformed_key_files_are_named(keys_dir):
    with pytest.raises(KeyFileError, match=r"no secret key"):
        ClientSecurity.from_files(keys_dir / "dev1.key", keys_dir / "server.key")
    (keys_dir / "allowed" / "junk.key").write_text("not a certificate\n")
    with pytest.raises(KeyFileError, match=r"junk\.key is not a CURVE certificate"):
        ServerSecurity(keys_dir)


def test_unreadable_or_odd_key_files_are_named(keys_dir, monkeypatch):
    (keys_dir / "dev1.key_secret").unlink()
    (keys_dir / "dev1.key_secret").mkdir()
    with pytest.raises(KeyFileError, match=r"device secret key .*dev1\.key_secret is not a file"):
        ClientSecurity(keys_dir, "dev1")

    def denied(path):  # what an unreadable file gives (as root every file is readable)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(zmq.auth, "load_certificate", denied)
    with pytest.raises(KeyFileError, match=r"cannot read server secret key .*server\.key_secret "
                                           r"\(Permission denied\).*python -m fleet\.keys"):
        ServerSecurity(keys_dir)


def _keys_cli(*args, umask=None):
    return subprocess.run([sys.executable, "-m", "fleet.keys", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def test_keys_cli_creates_the_layout_with_private_secrets(tmp_path):
    out = tmp_path / "keys"
    done = _keys_cli(out, "--server", "--device", "a", "--device", "b", umask=0)  # 0600 whatever the umask
    assert done.returncode == 0, done.stderr
    for name in ("server", "a", "b"):
        assert stat.S_IMODE((out / f"{name}.key_secret").stat().st_mode) == 0o600
        public, secret = zmq.auth.load_certificate(out / f"{name}.key_secret")
        assert secret is not None and zmq.auth.load_certificate(out / f"{name}.key") == (public, None)
    assert sorted(p.name for p in (out / "allowed").iterdir()) == ["a.key", "b.key"]
    assert (out / "allowed" / "a.key").read_bytes() == (out / "a.key").read_bytes()
    assert not list(out.glob(".fleet-keys-*"))  # the temporary folder is gone
    ServerSecurity(out)  # what the tool makes, the hub loads
    ClientSecurity(out, "a")


def test_keys_cli_never_overwrites(tmp_path):
    out = tmp_path / "keys"
    assert _keys_cli(out, "--server", "--device", "a").returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*.key*")}
    for args in (("--device", "a", "new"), ("--server",)):
        done = _keys_cli(out, *args)
        assert done.returncode == 2
        assert "refusing to overwrite" in done.stderr and ".key_secret" in done.stderr
    assert {p: p.read_bytes() for p in out.rglob("*.key*")} == before  # nothing changed, no 'new'


@pytest.mark.parametrize("args", [(), ("--device", "server"), ("--device", "../x"), ("--device", "a", "a")])
def test_keys_cli_rejects_bad_requests(tmp_path, args):
    done = _keys_cli(tmp_path / "keys", *args)
    assert done.returncode == 2 and "error" in done.stderr
    assert not (tmp_path / "keys").exists()


def test_keys_cli_help_explains_what_goes_where():
    done = _keys_cli("--help")
    assert done.returncode == 0
    for words in ("allowed/NAME.key", "server.key_secret", "copy it to every device", "0600"):
        assert words in done.stdout


# --- plain TCP ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["tcp://127.0.0.1:5555", "tcp://127.0.0.1:*", "tcp://[::1]:5555",
                                     "tcp://localhost:5555", "ipc:///tmp/fleet-hub", "inproc://hub"])
def test_plain_allowed_only_locally_and_only_with_the_flag(address):
    check_plain_allowed(address, True)
    for flag in (False, None, "true", 1):
        with pytest.raises(ValueError, match="bridge.allow_plain"):
            check_plain_allowed(address, flag)


@pytest.mark.parametrize("address", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://192.168.1.20:5555",
                                     "tcp://10.0.0.5:5555", "tcp://[::]:5555", "tcp://eth0:5555",
                                     "tcp://127.0.0.1", "127.0.0.1:5555", "udp://127.0.0.1:5555"])
def test_plain_refused_beyond_loopback_even_with_the_flag(address):
    with pytest.raises(ValueError, match=r"bridge\.allow_plain: true allows plain TCP only on a loopback"):
        check_plain_allowed(address, True)
