"""CURVE security for the ZeroMQ bridge: the hub's keys and allow-list, a device's keys, and the rule
for plain TCP.

The hub (``ServerSecurity``) is a CURVE server; a ZAP handler (pyzmq's ``ThreadAuthenticator``) accepts
exactly the clients whose public certificate is in ``KEYS/allowed/`` and rejects every other one during
the handshake, before any frame reaches the ROUTER. A device (``ClientSecurity``) holds its own key pair
and the hub's public key, so it also knows it talks to the real hub. Keys come from
``python -m fleet.keys`` (its ``--help`` says which file goes to which machine).

Rejected clients are counted from the ROUTER's socket monitor (measured with pyzmq 27 / libzmq 4.3.5,
``tests/bridge/test_security.py``): an unknown key ends in ``EVENT_HANDSHAKE_FAILED_AUTH`` (the ZAP
status, 400); a plain (NULL) client in ``EVENT_HANDSHAKE_FAILED_PROTOCOL`` with
``PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH``; a client with the wrong server key in the same event with
``PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC``. The ZAP handler alone would miss the last two: libzmq never asks
it about them. Both ends of a plain client see the mismatch, and when the client hangs up first (about
one time in three on loopback) the hub sees only ``EVENT_HANDSHAKE_FAILED_NO_DETAIL`` (EPIPE or
ECONNRESET), counted as ``aborted``: the total is exact, the cause is best effort. Every failed handshake
counts, so a client that keeps reconnecting (a wrong server key: every reconnect interval) counts each
time.

Without a running ZAP handler libzmq lets *any* CURVE client that knows the server's public key in
(measured), so ``apply`` starts the handler before the socket may bind, refuses a socket that is
already bound, and ``stop`` closes the socket before it stops the handler.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import threading
import warnings
from collections import Counter
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from fleet.bridge import keys

__all__ = ["KeyFileError", "ServerSecurity", "ClientSecurity", "check_plain_allowed"]

_KEY_CHARS = 40  # a z85-encoded 32-byte CURVE key
_MONITORED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
              | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_MONITOR_STOPPED)
_POLL_MS = 50  # how often the monitor thread looks at its stop flag


class KeyFileError(OSError):
    """A key file or folder is missing, unreadable or malformed (the message names it)."""


def _valid_key(key: bytes | None) -> bool:
    try:
        return key is not None and len(key) == _KEY_CHARS and len(z85.decode(key)) == 32
    except ValueError:
        return False


def _load(path: Path, what: str, hint: str, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) z85 keys from a certificate, with errors that name the file and the fix."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise KeyFileError(f"{what} {path} is not a file; {hint}")
        public, secret_key = zmq.auth.load_certificate(path)
    except FileNotFoundError:
        raise KeyFileError(f"{what} not found: {path}; {hint}") from None
    except KeyFileError:
        raise
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path} ({exc.strerror or exc}); {hint}") from None
    except ValueError:
        raise KeyFileError(f"{path} is not a CURVE certificate (no public-key line); {hint}") from None
    if secret and secret_key is None:
        raise KeyFileError(f"{path} holds no secret key (is it a public .key certificate?); {hint}")
    if not _valid_key(public) or (secret and not _valid_key(secret_key)):
        raise KeyFileError(f"{path} holds a malformed key (expected {_KEY_CHARS} z85 characters); {hint}")
    if secret and os.name == "posix" and stat.S_IMODE(mode) & 0o077:
        warnings.warn(f"secret key {path} is readable by other users; chmod 600 it", stacklevel=3)
    return public, secret_key if secret else None


def _read_allowed(allowed_dir: Path) -> dict[bytes, str]:
    """z85 public key -> device name (the certificate's file name) for every ``allowed/*.key``."""
    if not allowed_dir.is_dir():
        raise KeyFileError(f"allow-list folder not found: {allowed_dir}; run `python -m fleet.keys "
                           f"{allowed_dir.parent} --device NAME`, or create it and copy the devices' "
                           "public .key certificates into it")
    names: dict[bytes, str] = {}
    hint = "put only devices' public .key certificates in the allow-list"
    for path in sorted(allowed_dir.glob(f"*{keys.PUBLIC_SUFFIX}")):
        public, _ = _load(path, "allowed certificate", hint, secret=False)
        names.setdefault(public, path.name.removesuffix(keys.PUBLIC_SUFFIX))
    if any(allowed_dir.glob(f"*{keys.SECRET_SUFFIX}")):
        warnings.warn(f"{allowed_dir} holds secret keys (*{keys.SECRET_SUFFIX}): only public "
                      "certificates belong there", stacklevel=3)
    return names


class _Authenticator(ThreadAuthenticator):
    """The ZAP handler; the User-Id of an accepted client is its device name (its certificate's file
    name in ``allowed/``), read on the ROUTER with ``frame.get("User-Id")``."""

    def __init__(self, context: zmq.Context, names: dict[bytes, str]) -> None:
        super().__init__(context)
        self.names = names

    def curve_user_id(self, client_public_key: bytes) -> str:
        z85_key = z85.encode(client_public_key)
        return self.names.get(z85_key, z85_key.decode("ascii"))


def _cause(event: int, value: int) -> str:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "unknown_key" if value == 400 else "auth_error"  # value: the ZAP status code
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return "not_curve"  # a plain (NULL) or PLAIN client
        if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return "bad_crypto"  # wrong server key, or a corrupted handshake
        return "protocol"
    return "aborted"  # EVENT_HANDSHAKE_FAILED_NO_DETAIL (value: errno): the peer hung up mid-handshake


class ServerSecurity:
    """The hub's CURVE keys and allow-list, from a folder made by ``python -m fleet.keys``:
    ``KEYS/server.key_secret`` and ``KEYS/allowed/*.key``.

    ``rejected`` counts failed handshakes on the socket given to ``apply`` (by cause in
    ``rejected_by_cause``: ``unknown_key``, ``not_curve``, ``bad_crypto``, ``protocol``, ``auth_error``,
    ``aborted``). It is updated by a monitor thread, so it lags a handshake by a few milliseconds.
    """

    def __init__(self, keys_dir: str | os.PathLike) -> None:
        self.keys_dir = Path(keys_dir)
        self.allowed_dir = self.keys_dir / keys.ALLOWED
        path = keys.secret_file(self.keys_dir, keys.SERVER)
        hint = f"run `python -m fleet.keys {self.keys_dir} --server` on the hub machine"
        self.public_key, self._secret_key = _load(path, "server secret key", hint, secret=True)
        self.allowed = _read_allowed(self.allowed_dir)  # z85 public key -> device name
        self._rejected: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._auth: _Authenticator | None = None
        self._socket: zmq.Socket | None = None
        self._monitor: threading.Thread | None = None
        self._stop = threading.Event()

    def __repr__(self) -> str:  # never the secret key
        return f"ServerSecurity({str(self.keys_dir)!r}, allowed={sorted(self.allowed.values())})"

    @property
    def rejected(self) -> int:
        """Failed handshakes so far (every attempt of a reconnecting client counts)."""
        with self._lock:
            return sum(self._rejected.values())

    @property
    def rejected_by_cause(self) -> dict[str, int]:
        with self._lock:
            return dict(self._rejected)

    def apply(self, ctx: zmq.Context, socket: zmq.Socket) -> None:
        """Start the ZAP handler on ``ctx`` and make ``socket`` a CURVE server. Call before ``bind``;
        one ``apply`` per ``ServerSecurity``, and one per context (a context has one ZAP handler)."""
        if self._auth is not None:
            raise RuntimeError("ServerSecurity.apply was already called; make one per hub socket")
        if socket.getsockopt(zmq.LAST_ENDPOINT):
            raise RuntimeError("ServerSecurity.apply must come before bind/connect: clients that "
                               "arrive before the ZAP handler runs are not authenticated")
        auth = _Authenticator(ctx, self.allowed)
        try:
            auth.start()
        except zmq.ZMQError as exc:
            auth.stop()
            raise RuntimeError(f"cannot start the ZAP handler ({exc}): this context already has one; "
                               "give the hub a context of its own") from None
        try:
            auth.configure_curve(domain="*", location=str(self.allowed_dir))
            socket.curve_secretkey = self._secret_key
            socket.curve_publickey = self.public_key
            socket.curve_server = True
            monitor = socket.get_monitor_socket(_MONITORED)
        except BaseException:
            auth.stop()
            raise
        self._auth, self._socket = auth, socket
        self._monitor = threading.Thread(target=self._watch, args=(monitor,), daemon=True,
                                         name="fleet-security-monitor")
        self._monitor.start()

    def reload(self) -> int:
        """Re-read ``allowed/`` (a certificate added or deleted takes effect for new handshakes;
        connections already made stay up); return how many devices are allowed."""
        allowed = _read_allowed(self.allowed_dir)
        self.allowed = allowed
        if self._auth is not None:
            self._auth.names = allowed
            self._auth.configure_curve(domain="*", location=str(self.allowed_dir))
        return len(allowed)

    def stop(self) -> None:
        """Close the socket if it is still open (without the handler libzmq would accept any CURVE
        client), stop the monitor thread and the ZAP handler. Idempotent; call before ``ctx.term()``."""
        if self._socket is not None and not self._socket.closed:
            self._socket.close(0)
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join()
            self._monitor = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self._socket = None

    def _watch(self, monitor: zmq.Socket) -> None:
        """The monitor thread: count failed handshakes until the socket closes or ``stop``."""
        try:
            while not self._stop.is_set():
                if not monitor.poll(_POLL_MS):
                    continue
                event = recv_monitor_message(monitor)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    return
                with self._lock:
                    self._rejected[_cause(event["event"], event["value"])] += 1
        finally:
            monitor.close(0)


class ClientSecurity:
    """A device's CURVE keys: ``KEYS/NAME.key_secret`` (its pair) and ``KEYS/server.key`` (the hub's
    public certificate), both from ``python -m fleet.keys``."""

    def __init__(self, keys_dir: str | os.PathLike, name: str) -> None:
        keys_dir = Path(keys_dir)
        self._init(keys.secret_file(keys_dir, name), keys.public_file(keys_dir, keys.SERVER), name)

    @classmethod
    def from_files(cls, secret_file: str | os.PathLike,
                   server_public_file: str | os.PathLike) -> ClientSecurity:
        """From explicit files: the device's ``NAME.key_secret`` and the hub's ``server.key``."""
        self = cls.__new__(cls)
        secret_file = Path(secret_file)
        self._init(secret_file, Path(server_public_file), secret_file.name.removesuffix(keys.SECRET_SUFFIX))
        return self

    def _init(self, secret_file: Path, server_file: Path, name: str) -> None:
        hint = (f"run `python -m fleet.keys DIR --device {name}` (and --server once) where the keys are "
                f"made, and copy DIR/{secret_file.name} and DIR/{server_file.name} to this device's "
                f"keys folder")
        self.name = name
        self.public_key, self._secret_key = _load(secret_file, "device secret key", hint, secret=True)
        self.server_key, _ = _load(server_file, "server public key", hint, secret=False)

    def __repr__(self) -> str:  # never the secret key
        return f"ClientSecurity(name={self.name!r}, public_key={self.public_key!r})"

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE client of the hub. Call before ``connect``."""
        socket.curve_secretkey = self._secret_key
        socket.curve_publickey = self.public_key
        socket.curve_serverkey = self.server_key


def _is_local(address: str) -> bool:
    scheme, sep, rest = address.partition("://")
    if not sep or not rest:
        return False
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]:")
    else:
        host, _, port = rest.rpartition(":")
    if not host or not port:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name, a host name: not provably loopback
        return False


def check_plain_allowed(bind_address: str, allow_plain: bool, *, setting: str = "bridge.allow_plain") -> None:
    """Allow a hub without CURVE only when ``allow_plain`` is exactly True and ``bind_address`` is local
    (``tcp://`` on a loopback address or ``localhost``, ``ipc://``, ``inproc://``); else ValueError
    naming ``setting``."""
    fix = "or give the hub CURVE keys (python -m fleet.keys; bridge.keys_dir)"
    if allow_plain is not True:
        raise ValueError(f"the hub at {bind_address!r} has no CURVE keys: plain TCP needs {setting}: true "
                         f"and a loopback bind address, {fix}")
    if not _is_local(bind_address):
        raise ValueError(f"{setting}: true allows plain TCP only on a loopback address "
                         "(tcp://127.0.0.1:PORT, tcp://[::1]:PORT, tcp://localhost:PORT, ipc://, inproc://), "
                         f"not {bind_address!r}; to accept devices from other machines "
                         f"{fix.removeprefix('or ')}")
