"""CURVE key pairs for the ZeroMQ bridge: ``python -m fleet.keys DIR [--server] [--device NAME ...]``.

Keys are written in pyzmq's certificate format (zmq.auth.create_certificates): NAME.key is the
public certificate, NAME.key_secret the secret one (it holds the public key too). Layout of DIR:

  server.key_secret   the hub's secret key: stays on the hub machine, nowhere else
  server.key          the hub's public certificate: copy it to every device
  NAME.key_secret     device NAME's secret key: copy it to device NAME only, then delete it here
  NAME.key            device NAME's public certificate
  allowed/NAME.key    the allow-list: the hub accepts exactly the devices whose public certificate
                      is in allowed/. Copying a device's NAME.key there allows it; deleting it
                      revokes the device (at the hub's next start, or ServerSecurity.reload())

On the hub, point the scenario key bridge.keys_dir at DIR (it needs server.key_secret and allowed/).
On device NAME, put NAME.key_secret and server.key in one folder and run
  python -m fleet.agent --keys FOLDER --name NAME --connect tcp://HUB:PORT

A device can make its own pair instead (python -m fleet.keys DIR --device NAME on the device), so that
its secret never travels: copy only its DIR/NAME.key into the hub's allowed/, and the hub's
server.key to the device.

Existing keys are never overwritten: the command refuses (exit status 2) and changes nothing.
Secret files are created with permissions 0600; a new DIR with 0700.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import zmq.auth

__all__ = ["SERVER", "ALLOWED", "KeyExistsError", "public_file", "secret_file", "allowed_file",
           "check_name", "create_keys", "main"]

SERVER = "server"  # the hub's key pair is DIR/server.key(_secret)
ALLOWED = "allowed"  # DIR/allowed/ holds the public certificates of the devices the hub accepts
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
SECRET_MODE = 0o600

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class KeyExistsError(FileExistsError):
    """Some of the key files to create already exist; nothing was written."""


def public_file(keys_dir: str | os.PathLike, name: str) -> Path:
    return Path(keys_dir) / f"{name}{PUBLIC_SUFFIX}"


def secret_file(keys_dir: str | os.PathLike, name: str) -> Path:
    return Path(keys_dir) / f"{name}{SECRET_SUFFIX}"


def allowed_file(keys_dir: str | os.PathLike, name: str) -> Path:
    return Path(keys_dir) / ALLOWED / f"{name}{PUBLIC_SUFFIX}"


def check_name(name: str) -> str:
    """A device name is a file name: letters, digits, ``_ . -``, at most 64, not ``server``."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad device name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit")
    if name == SERVER:
        raise ValueError(f"{SERVER!r} is the hub's own key pair, not a device name")
    return name


def _targets(keys_dir: Path, server: bool, devices: Iterable[str]) -> list[tuple[str, list[Path]]]:
    """(name, [secret, public, allow-list copy]) for every pair to create."""
    plan = [(SERVER, [secret_file(keys_dir, SERVER), public_file(keys_dir, SERVER)])] if server else []
    plan += [(name, [secret_file(keys_dir, name), public_file(keys_dir, name), allowed_file(keys_dir, name)])
             for name in devices]
    return plan


def _install(source: Path, target: Path, mode: int, exact: bool) -> None:
    """Copy ``source`` to a new file ``target`` (never replacing one); ``exact`` forces ``mode``
    whatever the umask (for secrets)."""
    data = source.read_bytes()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if exact:
            os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def create_keys(keys_dir: str | os.PathLike, server: bool = False, devices: Iterable[str] = ()) -> list[Path]:
    """Create the server pair (``server``) and one pair per device, each device's public certificate
    also in ``allowed/``; return the files written.

    Raises ``KeyExistsError`` naming every existing target before writing anything, and
    ``ValueError`` for a bad or repeated device name.
    """
    keys_dir = Path(keys_dir)
    devices = [check_name(name) for name in devices]
    repeated = sorted({name for name in devices if devices.count(name) > 1})
    if repeated:
        raise ValueError(f"device name given more than once: {', '.join(repeated)}")
    plan = _targets(keys_dir, server, devices)
    existing = [path for _, paths in plan for path in paths if path.exists()]
    if existing:
        raise KeyExistsError("refusing to overwrite existing key files: "
                             + ", ".join(str(p) for p in existing)
                             + ". Delete them first if you really mean to replace these keys "
                             "(every machine holding the old public certificate then needs the new one).")
    if not keys_dir.exists():
        keys_dir.mkdir(mode=0o700, parents=True)
    (keys_dir / ALLOWED).mkdir(exist_ok=True)
    written = []
    # Generate inside a private (0700) temporary folder, then copy each file into place with O_EXCL:
    # a secret is never readable by others, not even for a moment, and nothing is ever replaced.
    with tempfile.TemporaryDirectory(dir=keys_dir, prefix=".fleet-keys-") as tmp:
        for name, paths in plan:
            public, secret = (Path(p) for p in zmq.auth.create_certificates(tmp, name))
            _install(secret, paths[0], SECRET_MODE, exact=True)
            for target in paths[1:]:
                _install(public, target, 0o644, exact=False)
            written += paths
    return written


def _role(path: Path) -> str:
    name = path.name.removesuffix(SECRET_SUFFIX).removesuffix(PUBLIC_SUFFIX)
    if path.parent.name == ALLOWED:
        return f"allow-list: the hub accepts {name}"
    if name == SERVER:
        return ("secret: stays on the hub machine" if path.name.endswith(SECRET_SUFFIX)
                else "public: copy to every device")
    if path.name.endswith(SECRET_SUFFIX):
        return f"secret: copy to device {name} only, then delete it here"
    return f"public certificate of {name}"


def _parser() -> argparse.ArgumentParser:
    head, _, rest = (__doc__ or "").partition("\n\n")
    parser = argparse.ArgumentParser(prog="python -m fleet.keys", description=head.split(": ``")[0] + ".",
                                     epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", metavar="DIR", help="the keys folder (created with 0700 if missing)")
    parser.add_argument("--server", action="store_true", help="create the hub's pair DIR/server.key(_secret)")
    parser.add_argument("--device", metavar="NAME", action="extend", nargs="+", default=[],
                        help="create device NAME's pair DIR/NAME.key(_secret) and allow it "
                             "(DIR/allowed/NAME.key); repeatable")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.server and not args.device:
        parser.error("nothing to create: give --server and/or --device NAME")
    keys_dir = Path(args.dir)
    try:
        written = create_keys(keys_dir, args.server, args.device)
    except ValueError as exc:
        parser.error(str(exc))  # exits 2
    except KeyExistsError as exc:
        print(f"fleet.keys: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fleet.keys: cannot write keys in {keys_dir}: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"created {path}  ({_role(path)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
