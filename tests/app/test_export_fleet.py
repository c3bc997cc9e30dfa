"""``python -m fleet.export_fleet``: a sampled fleet written as a trace replays as the same fleet."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from fleet.app.build import build_fleet
from fleet.app.export_fleet import main
from fleet.app.scenario import load_variants, parse_scenario
from tests.app.test_trace_scenario import ROOT


def _replay(scenario, path):
    """``scenario`` with its mix replaced by the exported trace at ``path`` (its classes are the records')."""
    data = scenario.model_dump()
    data["fleet"].pop("mix")
    data["fleet"]["trace"] = {"capacity": str(path), "behaviour": str(path), "memory_class": "esp32",
                              "link_class": "nb_iot"}
    return parse_scenario(data)


@pytest.mark.parametrize("name, suffix", [("smoke", ".json"), ("stragglers", ".csv")])
def test_an_exported_fleet_replays(tmp_path, capsys, name, suffix):
    _assert_replays(ROOT / "scenarios" / f"{name}.yaml", tmp_path / f"fleet{suffix}", capsys)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_a_mix_entrys_link_overrides_replay(tmp_path, capsys, suffix):
    """Defect: a ``fleet.mix`` entry's ``link:`` overrides were dropped on export (the replay had the link
    class's loss). The rates and latency are written per device; ``loss_prob`` as an extension key."""
    text = (ROOT / "scenarios" / "smoke.yaml").read_text()
    entry = "{device_class: esp32_s3_psram, link_class: wifi, fraction: 0.3}"
    assert entry in text
    source = tmp_path / "lossy.yaml"
    source.write_text(text.replace(entry, "{device_class: esp32_s3_psram, link_class: wifi, fraction: 0.3, "
                                          "link: {loss_prob: 0.7, up_bit_per_s: 2.0e5, latency_s: 0.25}}"))
    path = tmp_path / f"fleet{suffix}"
    original = _assert_replays(source, path, capsys)
    losses = [original.profiles[d].loss_prob for d in range(len(original.profiles))]
    assert losses.count(0.7) == 15  # 0.3 of 50 devices, the others the wifi class's
    written = json.loads(path.read_text()) if suffix == ".json" else None
    if written is not None:
        assert sorted({r.get("loss_prob") for r in written.values()}, key=str) == [0.7, None]


def _assert_replays(source, path, capsys):
    """Export ``source``'s fleet to ``path``, replay it, and check it is the same fleet; the original."""
    assert main([str(source), "--out", str(path)]) == 0
    assert f"{path}: " in capsys.readouterr().out
    (_, scenario), *_ = load_variants(source)
    original, flops_per_sample = build_fleet(scenario)
    replayed, again = build_fleet(_replay(scenario, path))
    assert again == flops_per_sample
    n = len(original.profiles)
    assert len(replayed.profiles) == n and replayed.client_ids == tuple(str(d) for d in range(n))
    for d in range(n):
        a, b = original.profiles[d], replayed.profiles[d]
        # every field bit for bit, but the rates: a ms-per-sample or kbit/s float that maps back exactly
        # does not always exist; then they are one ulp apart (docs/traces.md)
        rates = ("flops_per_s", "up_bit_per_s", "down_bit_per_s")
        assert {f: getattr(a, f) for f in a.__dataclass_fields__ if f not in rates} == \
            {f: getattr(b, f) for f in b.__dataclass_fields__ if f not in rates}
        for f in rates:
            assert abs(getattr(a, f) - getattr(b, f)) <= math.ulp(getattr(a, f)), (d, f)
        assert original.battery[d] == replayed.battery[d]
    times = np.random.default_rng(5).uniform(0, 4e5, 100).tolist()
    for d in range(0, n, 3):
        for t in times:
            assert original.availability[d].unavailable_cause(t) == replayed.availability[d].unavailable_cause(t)
            assert original.availability[d].next_interruption(t, t + 9e4) == \
                replayed.availability[d].next_interruption(t, t + 9e4)
    return original


def test_a_trace_fleet_exports_to_the_same_records(tmp_path):
    """Exporting the trace scenario writes each client's own ms per sample and kbit/s back."""
    path = tmp_path / "fleet.json"
    assert main([str(ROOT / "scenarios" / "trace_small.yaml"), "--out", str(path)]) == 0
    written = json.loads(path.read_text())
    source = json.loads((ROOT / "scenarios" / "traces" / "example_capacity.json").read_text())
    behaviour = json.loads((ROOT / "scenarios" / "traces" / "example_behaviour.json").read_text())
    assert len(written) == 30
    for cid, record in written.items():
        assert record["computation"] == pytest.approx(source[cid]["computation"], rel=1e-15)
        assert record["communication"] == source[cid]["communication"]
        assert record["active"] == behaviour[cid]["active"] and record["finish_time"] == 172_800.0


def test_random_failures_cannot_be_written_and_bad_arguments(tmp_path, capsys):
    assert main([str(ROOT / "scenarios" / "iot_1000.yaml"), "--out", str(tmp_path / "f.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "random failures" in err[0]
    assert main([str(ROOT / "scenarios" / "smoke.yaml"), "--out", str(tmp_path / "f.txt")]) == 2
    assert ".json or .csv" in capsys.readouterr().err
    assert main([str(ROOT / "scenarios" / "smoke.yaml"), "--out", str(tmp_path / "f.csv"), "--variant", "x"]) == 2
    assert "--variant 'x'" in capsys.readouterr().err


def test_an_out_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, capsys):
    """Defect: ``--out FILE/x.json`` under a regular file exited 1 (a write failure); like ``fleet.run``'s bad
    ``--out``, it is one line naming the path, exit status 2, checked before the fleet is built."""
    smoke = str(ROOT / "scenarios" / "smoke.yaml")
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir.json").mkdir()
    cases = [(tmp_path / "afile" / "x.json", f"'{tmp_path / 'afile'}' is not a directory"),
             (tmp_path / "afile" / "sub" / "x.csv", f"'{tmp_path / 'afile' / 'sub'}' is not a writable folder "
                                                   "(Not a directory)"),
             (tmp_path / "adir.json", "a directory, not a file")]
    for out, why in cases:
        assert main([smoke, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == f"python -m fleet.export_fleet: --out '{out}': {why}\n"
    # A missing folder is made, as fleet.run makes its --out.
    assert main([smoke, "--out", str(tmp_path / "missing" / "f.csv")]) == 0
    assert (tmp_path / "missing" / "f.csv").read_text().count("\n") == 51  # the header and 50 devices


def test_the_module_exits_2_with_one_line_for_an_out_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "x.json"
    done = subprocess.run([sys.executable, "-m", "fleet.export_fleet", str(ROOT / "scenarios" / "smoke.yaml"),
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"python -m fleet.export_fleet: --out '{out}': '{tmp_path / 'afile'}' is not a directory\n"
