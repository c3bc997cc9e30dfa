"""The command line: ``python -m fleet.export_fleet SCENARIO --out FILE.json|FILE.csv [--variant V]
[--seed N] [--set k=v]``.

Writes the fleet the scenario (or its ``--variant``) would simulate (the same draws as ``fleet.run``) as a
trace in FedScale's schema with fleet's extension keys (``devices.traces.export``): per device its ms per
sample of the scenario's model, kbit/s, class, memory, availability intervals and a mix entry's link
loss override (``loss_prob``). The file serves as both
the capacity and the behaviour file of a ``fleet.trace`` section (``pairing: id``), which replays the same
fleet (docs/traces.md). Exit status: 0 written; 2 a bad scenario, argument or a fleet with random failures
(no period to write), or an ``--out`` that cannot be written (``check_out_file``: a folder, or a path whose
folder is not a writable folder; checked before the fleet is built); 1 writing fails all the same (a full
disk). Every failure is one line on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fleet.app.out_folder import OutFolderError, make_writable, out_path
from fleet.app.pipes import quiet_on_closed_pipe
from fleet.app.printing import count

PROG = "python -m fleet.export_fleet"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=(
        "Write the fleet a scenario simulates as a FedScale-format trace (JSON or CSV) that replays it."))
    p.add_argument("scenario", help="scenario YAML file (see scenarios/)")
    p.add_argument("--out", type=out_path, required=True, help="the trace to write: FILE.json or FILE.csv")
    p.add_argument("--variant", help="the variant whose fleet to write (a scenario with variants; default the "
                   "first)")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a scenario key, e.g. --set fleet.devices=50 (repeatable)")
    return p


def check_out_file(out: Path) -> None:
    """The ``--out`` check of a file to write, ``fleet.app.out_folder.check_out_folder``'s for its folder: ``out``
    is not a folder, and its folder is made if needed (as ``fleet.run`` makes its ``--out``) and proved writable
    by writing (and removing) a file there. Else ``OutFolderError``, one line naming ``out`` and saying why."""
    from fleet.app.scenario import echo

    folder = out.parent
    if out.is_dir():
        raise OutFolderError(f"--out {echo(str(out))}: a directory, not a file")
    if folder.exists() and not folder.is_dir():
        raise OutFolderError(f"--out {echo(str(out))}: {echo(str(folder))} is not a directory")
    try:
        make_writable(folder)
    except OSError as exc:
        raise OutFolderError(f"--out {echo(str(out))}: {echo(str(folder))} is not a writable folder "
                             f"({exc.strerror or echo(str(exc))})") from None


@quiet_on_closed_pipe
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fleet.app.scenario import ScenarioError, echo, load_variants, pick_variant

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.out.suffix.lower() not in (".json", ".csv"):
        print(f"{PROG}: --out {echo(str(args.out))}: the format is .json or .csv", file=sys.stderr)
        return 2
    try:
        scenario = pick_variant(load_variants(args.scenario, overrides), args.variant, "--variant")[0][1]
        if scenario.bridge is not None:
            raise ScenarioError("bridge: a scenario with real devices is not exported (their figures are measured, "
                                "not drawn); without its bridge section, its simulated fleet is")
        check_out_file(args.out)
        from devices.traces import fleet_records, write_records
        from fleet.app.build import build_fleet

        try:
            built, flops_per_sample = build_fleet(scenario)
            records = fleet_records(built.profiles, built.availability, built.battery, flops_per_sample,
                                    built.client_ids)
        except ValueError as exc:
            raise ScenarioError(str(exc)) from None
        write_records(records, args.out)
    except ScenarioError as exc:
        print(f"{PROG}: scenario error: {exc}", file=sys.stderr)
        return 2
    except OutFolderError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: cannot write {str(args.out)[:300]}: {exc.strerror or echo(str(exc))}", file=sys.stderr)
        return 1
    print(f"{args.out}: {count(len(records), 'device')}, computation in ms per sample of a model of "
          f"{flops_per_sample:.6g} forward FLOPs per sample")
    return 0


if __name__ == "__main__":
    sys.exit(main())
