"""The agent's command line: ``python -m fleet.agent --connect tcp://HOST:PORT ...`` (the options are
``fleet.bridge.agent``'s docstring). Every option is checked before the agent starts: a wrong one is one line
naming it, exit status 2, no traceback (an unknown ``--profile``, an address ZeroMQ cannot parse, a keys
folder without this device's keys)."""

from __future__ import annotations

import argparse
import os
import sys

import zmq

from devices.catalog import DEVICE_CLASSES
from fleet.bridge.agent import HEARTBEAT_INTERVAL_S, LIVENESS, MAX_BACKOFF_S, MAX_RECONNECTS, Agent
from fleet.bridge.runner import configure_threads

__all__ = ["OptionError", "check_endpoint", "check_profile", "main"]


class OptionError(ValueError):
    """A command-line option the agent cannot work with; the message names the option."""


def check_profile(profile: str) -> None:
    """``OptionError`` unless ``profile`` is a class of the device catalog (``devices.DEVICE_CLASSES``)."""
    if profile not in DEVICE_CLASSES:
        raise OptionError(f"--profile: unknown device class {profile!r} (known: {', '.join(DEVICE_CLASSES)})")


def check_endpoint(address: str) -> None:
    """``OptionError`` when ZeroMQ cannot parse ``address`` (e.g. ``localhost:5555`` without ``tcp://``).
    A well-formed address nobody listens on passes: connecting is the agent's loop."""
    context = zmq.Context()
    probe = context.socket(zmq.DEALER)
    try:
        probe.connect(address)
    except zmq.ZMQError as error:
        raise OptionError(f"--connect: {address!r} is not a ZeroMQ address ({error.strerror}); "
                          "write tcp://HOST:PORT") from None
    finally:
        probe.close(0)
        context.term()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fleet.agent", description=(
        "The agent a physical device runs to join a simulated fleet (docs/bridge.md, docs/protocol.md)."))
    p.add_argument("--connect", required=True, help="the hub's address, e.g. tcp://10.0.0.5:5555")
    p.add_argument("--profile", default="rpi4_4gb", help="this device's class (devices/catalog.py)")
    p.add_argument("--name", default=None, help="a stable name, so a restarted agent rejoins (default: host-pid)")
    p.add_argument("--keys", default=None, help="folder with this device's CURVE keys and server.key "
                   "(python -m fleet.keys); omit only for a plain loopback hub")
    p.add_argument("--data", default=None, help="dataset folder (default: $FLEET_DATA_DIR or the Debian one)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads (default: $OMP_NUM_THREADS, else torch's default)")
    p.add_argument("--heartbeat-interval-s", type=_positive_float, default=HEARTBEAT_INTERVAL_S,
                   help="heartbeat interval until the hub's welcome gives its own (default %(default)s)")
    p.add_argument("--liveness", type=_positive_int, default=LIVENESS,
                   help="silent intervals before the hub counts as gone, until the welcome gives its own "
                   "(default %(default)s)")
    p.add_argument("--max-backoff-s", type=_positive_float, default=MAX_BACKOFF_S)
    p.add_argument("--max-reconnects", type=int, default=MAX_RECONNECTS,
                   help="give up (exit 1) after this many connections in a row without a welcome; 0: never "
                   "(default %(default)s)")
    args = p.parse_args(argv)
    name = args.name or f"{os.uname().nodename}-{os.getpid()}"
    try:
        check_profile(args.profile)
        check_endpoint(args.connect)
        if args.keys is not None:
            _check_keys(args.keys, name)
    except OptionError as error:
        print(f"fleet.agent: {error}", file=sys.stderr)
        return 2
    threads = configure_threads(args.threads)
    print(f"fleet.agent: {name} ({args.profile}) on {threads} torch thread(s), connecting to {args.connect}",
          file=sys.stderr)
    agent = Agent(args.connect, args.profile, name, args.data, args.keys, args.heartbeat_interval_s,
                  args.liveness, args.max_backoff_s, max(0, args.max_reconnects))
    try:
        return agent.run()
    except KeyboardInterrupt:
        return 0


def _check_keys(keys_dir: str, name: str) -> None:
    """``OptionError`` when ``keys_dir`` lacks this device's ``NAME.key_secret`` or ``server.key``, or holds
    bad ones (the message names the file and, through ``--name``, which device's keys it wanted)."""
    from fleet.bridge.security import ClientSecurity, KeyFileError

    if not os.path.isdir(keys_dir):
        raise OptionError(f"--keys: {keys_dir} is not a folder (it holds this device's NAME.key_secret and "
                          "the hub's server.key, from python -m fleet.keys)")
    try:
        ClientSecurity(keys_dir, name)
    except KeyFileError as error:
        raise OptionError(f"--keys (for --name {name}): {error}") from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
