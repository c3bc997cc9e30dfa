"""Reaching Ray: is it installed, which cluster a run joins, is that address a Ray cluster, and joining it or
starting a private instance on this machine (``connect``), for ``fleet.learning.ray_backend`` and ``fleet.sweep``.

* **Where Ray runs.** ``executor.ray_address``, else ``RAY_ADDRESS``, names a cluster to join (``ray_address``);
  neither (or ``local``) starts a private instance here, on loopback only, without dashboard, usage reporting
  or worker log forwarding. A process that already called ``ray.init`` keeps its own session.
* **Checked first** (``check_cluster``, without importing Ray): the address must answer as a gRPC server within
  ``CONNECT_TIMEOUT_S`` (Ray itself retries a wrong address for minutes); ``auto`` needs an instance here.
* **Joining** (``_join``): Ray's C++ retry lines are held back while it joins; a refused token is one line
  saying how to give one.

Ray is an optional dependency (``pip install '.[ray]'``): it is imported only by ``import_ray``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import signal
import socket
import sys
import tempfile
from contextlib import contextmanager

from fleet.learning.backends import BackendUnavailable

__all__ = ["RAY_MISSING", "CONNECT_TIMEOUT_S", "check_cluster", "connect", "import_ray", "ray_address",
           "ray_installed"]

RAY_MISSING = "the ray backend needs the ray package: pip install '.[ray]' (or pip install 'fleet-sim[ray]')"
CONNECT_TIMEOUT_S = 5.0  # a cluster address must accept a TCP connection within this
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is 127.0.0.1 (its macOS default)


def ray_installed() -> bool:
    """Whether ``import ray`` would find the package, without importing it (the import costs seconds of CPU)."""
    if "ray" in sys.modules:
        return sys.modules["ray"] is not None  # None: importing it is known to fail
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def import_ray():
    """The ``ray`` module, with usage reporting off unless the user set ``RAY_USAGE_STATS_ENABLED``;
    ``BackendUnavailable`` (one line) when it is not installed."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailable(f"{RAY_MISSING} ({exc})") from None
    return ray


def ray_address(configured: str | None) -> tuple[str | None, str]:
    """The cluster to join and where that address came from: ``executor.ray_address``, else ``RAY_ADDRESS``;
    ``(None, "")`` for a private instance on this machine (neither set, or either is ``local``)."""
    if configured == "local":
        return None, ""
    if configured:
        return configured, "executor.ray_address"
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "local":
        return env, "RAY_ADDRESS"
    return None, ""


def check_cluster(address: str | None = None) -> None:
    """Check the Ray cluster a run would join, without importing Ray: ``address`` (``executor.ray_address``),
    else ``RAY_ADDRESS``; nothing to check for a private instance (neither set, or ``local``).
    ``BackendUnavailable`` (one line) when the address is malformed, when nothing at it accepts a TCP
    connection within ``CONNECT_TIMEOUT_S``, when what accepts does not speak gRPC (a Ray cluster's GCS and
    its Ray Client server do), or, for ``auto``, when no Ray instance runs on this machine."""
    target, where = ray_address(address)
    if target is not None:
        _probe(target, where, CONNECT_TIMEOUT_S)


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS
_HTTP2_SETTINGS = 4  # the frame type a gRPC (HTTP/2) server's first frame has


def _probe(address: str, where: str, timeout_s: float) -> None:
    """Fail fast, in one line, unless a gRPC server answers at ``address`` (host:port, or ray://host:port)
    within ``timeout_s``: a TCP connection, then the HTTP/2 connection preface, to which an HTTP/2 server
    answers with its SETTINGS frame (Ray itself retries a wrong address for minutes, its C++ core printing
    each retry). Over TLS (``RAY_USE_TLS``) only the TCP connection is checked. ``auto`` (the instance
    started on this machine) is checked for an instance: Ray's address file or a running GCS server."""
    if address == "auto":
        _probe_auto(where)
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise BackendUnavailable(f"{where} {address!r}: expected host:port (or ray://host:port, or auto)")
    fix = "start one with `ray start --head`, or unset it to run Ray on this machine"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return
            conn.settimeout(timeout_s)
            conn.sendall(_HTTP2_PREFACE)
            head = b""
            while len(head) < 9:
                part = conn.recv(9 - len(head))
                if not part:
                    break
                head += part
    except socket.timeout:
        raise BackendUnavailable(f"{where} {address}: no Ray cluster answers within {timeout_s:g} s (something "
                                 f"accepts connections there but says nothing); {fix}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise BackendUnavailable(f"{where} {address}: no Ray cluster answers within {timeout_s:g} s ({reason}); "
                                 f"{fix}") from None
    if len(head) < 9 or head[3] != _HTTP2_SETTINGS:
        seen = head[:9].decode("ascii", "replace").split("\r")[0].strip() or "nothing"
        raise BackendUnavailable(f"{where} {address}: not a Ray cluster (it does not speak gRPC; it answered "
                                 f"{seen!r}): a Ray cluster's address is its GCS port (6379 unless `ray start "
                                 f"--port` said otherwise), or ray://host:10001 for Ray Client") from None


def _probe_auto(where: str) -> None:
    """``auto``: Ray joins the instance whose address ``ray start`` left in its temporary folder, else any GCS
    server running here; with neither, say so now rather than after Ray's own search."""
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or ("/tmp" if os.path.isdir("/tmp")
                                                                        else tempfile.gettempdir())
    folder = os.path.join(base, "ray")  # Ray's default temporary folder
    if os.path.exists(os.path.join(folder, "ray_current_cluster")) or _gcs_running():
        return
    raise BackendUnavailable(f"{where} auto: no Ray instance runs on this machine; start one with "
                             "`ray start --head`, give its address, or unset it to run Ray on this machine")


def _gcs_running() -> bool:
    """Whether a process named ``gcs_server`` (a Ray head's) runs on this machine (Linux's /proc; elsewhere
    assume yes and let Ray look)."""
    if not os.path.isdir("/proc"):
        return True
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == "gcs_server":
                        return True
            except OSError:
                continue
    return False


def _quiet_token_notice(record: logging.LogRecord) -> bool:
    """Drop Ray's start-up notice that token authentication is on (its default for a new local instance,
    whose token lives in ~/.ray/auth_token): a line on every run, nothing to act on."""
    return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _quiet_thread_notice(record: logging.LogRecord) -> bool:
    """Drop ``ray.init``'s warning that, called off the main thread, it sets no SIGTERM handler: the backend
    sets the same handler itself, from the main thread (``_exit_on_sigterm``)."""
    return not record.getMessage().startswith("SIGTERM handler is not set")


def _exit_on_sigterm(signum, frame) -> None:
    """What ``ray.init`` installs when called on the main thread: SIGTERM exits through ``sys.exit``, so the
    interpreter's exit hooks (Ray's shutdown among them) run."""
    sys.exit(signum)


@contextmanager
def _loopback():
    """While Ray starts here: make it take 127.0.0.1 as this node's address, so its servers listen on loopback
    only, and keep its token notice quiet. On Linux Ray otherwise replaces 127.0.0.1 (``_node_ip_address``)
    by the routable address and listens on every interface; its macOS/Windows default
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) is loopback. Ray reads that variable when it is imported, so the
    imported constant is set too."""
    try:
        from ray._private import ray_constants
    except ImportError:  # a later Ray moved it: fall back to its own choice of address
        ray_constants = None
    saved_env = os.environ.get(_LOCAL_ONLY_ENV)
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_LOCAL_ONLY_ENV] = "0"
    if saved is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    announcer = logging.getLogger("ray._private.authentication.authentication_token_setup")
    announcer.addFilter(_quiet_token_notice)
    try:
        yield
    finally:
        announcer.removeFilter(_quiet_token_notice)
        if saved_env is None:
            os.environ.pop(_LOCAL_ONLY_ENV, None)
        else:
            os.environ[_LOCAL_ONLY_ENV] = saved_env
        if saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Make ``ray`` usable in this process; True when this call started it (then the caller shuts it down).

    Already initialised: nothing to do. ``address`` (else ``RAY_ADDRESS``): join that cluster, after a probe.
    Neither: start a private instance on loopback with ``num_cpus`` logical CPUs (default: the machine's)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    target, where = ray_address(address)
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    starter = logging.getLogger("ray._private.worker")
    starter.addFilter(_quiet_thread_notice)
    try:
        if target is not None:
            _probe(target, where, CONNECT_TIMEOUT_S)
            _join(ray, target, where, quiet)
        else:
            with _loopback():
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                         _node_ip_address="127.0.0.1", **quiet)
    except BackendUnavailable:
        raise
    except (Exception, SystemExit) as exc:  # Ray exits the process on some connection failures
        if isinstance(exc, SystemExit) and exc.code == signal.SIGTERM:
            raise  # the process was told to stop (``_exit_on_sigterm``, or Ray's own handler): not a failure to join
        what = f"cannot join the Ray cluster at {target} ({where})" if target else "cannot start Ray"
        reason = _first_line(exc).replace("`--address` flag", "executor.ray_address")  # Ray's own CLI's words
        raise BackendUnavailable(f"{what}: {reason}") from None
    finally:
        starter.removeFilter(_quiet_thread_notice)
    return True


_RAY_LOG_LINE = re.compile(r"\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\] ")  # a line of Ray's C++ core on stderr
_TOKEN_REFUSED = ("InvalidAuthToken", "Authentication token is missing or incorrect")


def _join(ray, target: str, where: str, options: dict) -> None:
    """``ray.init(address=target)``, with this process's standard error (file descriptor 2) captured meanwhile:
    Ray's C++ core prints a line on every retry of a cluster that refuses it. Joined: what was captured is
    written out as it came. Refused: the lines that are not Ray's log lines are written out (another thread
    may have printed meanwhile), and a refusal of the token becomes one line saying how to give one
    (``BackendUnavailable``); any other failure is re-raised."""
    sys.stderr.flush()
    saved = os.dup(2)
    failure: BaseException | None = None
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            ray.init(address=target, **options)
        except (Exception, SystemExit) as exc:  # Ray exits the process on some connection failures
            failure = exc
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode("utf-8", "replace")
    if failure is None:
        sys.stderr.write(text)
        return
    sys.stderr.write("".join(line for line in text.splitlines(keepends=True) if not _RAY_LOG_LINE.match(line)))
    if any(sign in text for sign in _TOKEN_REFUSED):
        raise BackendUnavailable(
            f"cannot join the Ray cluster at {target} ({where}): it refused this process's token (token "
            "authentication, Ray's default): set RAY_AUTH_MODE=token, with the cluster's token in RAY_AUTH_TOKEN "
            "or in ~/.ray/auth_token (`ray get-auth-token` on the head prints it)")
    raise failure


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
