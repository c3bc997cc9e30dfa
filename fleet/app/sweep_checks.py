"""What ``fleet.sweep`` checks before any run: every setting's scenario and its trace files, the Ray clusters
its runs would join, ``--out``, and the scenario's identity for the manifest. A failure is an ``InputError``:
one line, exit status 2, nothing run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fleet.app.sweep_plan import content_sha256, file_sha256

__all__ = ["InputError", "check_out", "check_ray", "check_traces", "scenario_hashes", "validate"]

PROG = "fleet.sweep"


class InputError(Exception):
    """Bad input found before anything runs: one line, exit status 2."""


def validate(path: str, settings, seeds: list[int]) -> tuple[dict[str, list[str]], dict[str | None, str]]:
    """Every setting's variant names, and the Ray clusters its runs would join: ``{executor.ray_address:
    where}`` for every learning-mode variant with ``executor.backend: ray`` (None: ``RAY_ADDRESS`` or a local instance;
    ``where`` names the first setting that has it). Each setting's scenario (and the seed bounds) is checked in
    full first, then its trace files (``check_traces``)."""
    from fleet.app.scenario import ScenarioError, load_variants, scenario_warnings

    names, warned, clusters, traces = {}, set(), {}, set()
    for i, setting in enumerate(settings):
        where = f" (--grid setting {setting.name})" if setting.values else ""
        try:
            if i == 0 and len(seeds) > 1:
                load_variants(path, [*setting.overrides, f"seed={max(seeds)}"])
            variants = load_variants(path, [*setting.overrides, f"seed={min(seeds)}"])
        except ScenarioError as exc:
            raise InputError(f"scenario error: {exc}{where}") from None
        for _, scenario in variants:
            for warning in scenario_warnings(scenario):
                if warning not in warned:
                    warned.add(warning)
                    print(f"{PROG}: scenario warning: {path}: {warning}{where}", file=sys.stderr)
            if scenario.executor.backend == "ray" and scenario.mode == "learning":  # timing mode builds none
                clusters.setdefault(scenario.executor.ray_address, where)
            check_traces(path, scenario, traces, where)
        names[setting.name] = [name for name, _ in variants]
    return names, clusters


def check_traces(path: str, scenario, checked: set[str], where: str) -> None:
    """A trace fleet's files, read as its run builds them (``fleet.app.build.build_fleet``: the files, the
    clients it takes, their mapping): a bad trace is refused here instead of failing every run. Once per
    distinct fleet (``checked``: what it depends on); a fleet sampled from a mix reads no file."""
    if scenario.fleet.trace is None:
        return
    key = json.dumps([scenario.fleet.model_dump(mode="json"), scenario.algorithm.model_dump(mode="json"),
                      scenario.seed], sort_keys=True)
    if key in checked:
        return
    checked.add(key)
    from fleet.app.build import build_fleet
    from fleet.app.scenario import ScenarioError

    try:
        build_fleet(scenario)
    except ScenarioError as exc:
        raise InputError(f"scenario error: {path}: {exc}{where}") from None


def check_ray(path: str, clusters: dict[str | None, str], backend: str) -> None:
    """Before anything runs: the Ray clusters the runs would join (``validate``) and, for ``--backend ray``,
    the sweep's own (``RAY_ADDRESS``) answer (``fleet.learning.ray_cluster.check_cluster``), and the ray
    package is installed (looked up, not imported) when any of them applies."""
    if not clusters and backend != "ray":
        return
    import importlib.util

    from fleet.learning import ray_cluster
    from fleet.learning.backends import BackendUnavailable

    if importlib.util.find_spec("ray") is None:
        if backend == "ray":
            raise InputError(f"--backend ray: {ray_cluster.RAY_MISSING}")
        raise InputError(f"scenario error: {path}: executor: {ray_cluster.RAY_MISSING}{next(iter(clusters.values()))}")
    for address, where in clusters.items():
        try:
            ray_cluster.check_cluster(address)
        except BackendUnavailable as exc:
            raise InputError(f"scenario error: {path}: executor: {exc}{where}") from None
    if backend == "ray" and None not in clusters:  # the sweep's own cluster, unless a run's check just made it
        try:
            ray_cluster.check_cluster(None)
        except BackendUnavailable as exc:
            raise InputError(f"--backend ray: {exc}") from None


def check_out(out: Path) -> None:
    from fleet.app.out_folder import OutFolderError, check_out_folder

    try:
        check_out_folder(out)
    except OutFolderError as exc:
        raise InputError(str(exc)) from None


def scenario_hashes(scenario: str) -> dict[str, str]:
    """The scenario's identity in the manifest: ``scenario_content_sha256`` (of its parsed content: what
    ``check_reuse`` compares) and ``scenario_sha256`` (of the file's bytes)."""
    try:
        return {"scenario_content_sha256": content_sha256(scenario), "scenario_sha256": file_sha256(scenario)}
    except OSError as exc:
        raise InputError(f"scenario error: {scenario}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise InputError(f"scenario error: {scenario}: {exc}") from None
