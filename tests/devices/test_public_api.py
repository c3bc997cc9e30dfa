"""The package surface: ``__all__`` is exactly the public names, and the layer rule holds."""

import ast
import pathlib
import types

import devices

PACKAGE_DIR = pathlib.Path(devices.__file__).parent
ALLOWED_IMPORTS = {"numpy", "devices", "__future__"}


def test_all_matches_public_names():
    public = {name for name, value in vars(devices).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert set(devices.__all__) == public
    assert len(devices.__all__) == len(set(devices.__all__))


def test_the_public_surface_is_exactly_this():
    """A name added to or dropped from the package is a decision: change this list with it."""
    assert set(devices.__all__) == {
        "DeviceClass", "DEVICE_CLASSES", "DEVICE_FIGURES", "LinkClass", "LINK_CLASSES", "LINK_FIGURES",
        "LINK_OVERRIDES", "GATEWAY_KINDS", "KIB", "MIB", "GIB", "FRACTION_SUM_TOLERANCE",
        "compute_time_s", "free_memory_bytes", "fits_memory", "energy_j", "joules_per_flop",
        "serialization_time_s", "framed_transfer_time_s", "framed_transfer_time_scalar_s",
        "battery_level_j", "BackgroundMemory", "Availability", "AlwaysOn", "Diurnal", "RandomFailure",
        "AllOf", "MixEntry", "DeviceProfile", "sample_fleet", "largest_remainder_counts",
        "SampledFleet", "sample_fleet_arrays"}  # a fleet of millions as arrays (docs/benchmarks.md, "Scale")


def test_imports_only_numpy_and_stdlib():
    import sys
    stdlib = set(sys.stdlib_module_names)
    for path in PACKAGE_DIR.rglob("*.py"):  # devices/traces/ included
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in ALLOWED_IMPORTS or root in stdlib, (path.name, root)


def test_files_stay_small():
    for path in PACKAGE_DIR.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 300, path.name
