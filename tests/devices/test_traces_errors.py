"""Every bad trace is one line naming the file, the client and the field, and ``fleet.run`` exits 2 with it,
no traceback."""

import copy
import math

import pytest

from devices.traces import TraceError, load_traces
from fleet.app.run import main
from tests.devices.trace_files import BEHAVIOUR, CAPACITY, write_pair


def _with(data: dict, client, key, value) -> dict:
    out = copy.deepcopy(data)
    if value is _DROP:
        del out[client][key]
    else:
        out[client][key] = value
    return out


_DROP = object()

CASES = [  # (capacity, behaviour, words every message must hold)
    (_with(CAPACITY, 2, "computation", _DROP), BEHAVIOUR, ["capacity", "client 2", "missing field 'computation'"]),
    (_with(CAPACITY, 3, "communication", _DROP), BEHAVIOUR, ["client 3", "'communication'"]),
    (_with(CAPACITY, 1, "computation", -5.0), BEHAVIOUR, ["client 1", "computation", "> 0", "-5.0"]),
    (_with(CAPACITY, 1, "computation", math.nan), BEHAVIOUR, ["client 1", "computation", "nan"]),
    (_with(CAPACITY, 4, "communication", math.inf), BEHAVIOUR, ["client 4", "communication", "inf"]),
    (_with(CAPACITY, 4, "communication", 0), BEHAVIOUR, ["client 4", "communication", "> 0"]),
    (_with(CAPACITY, 4, "communication", "fast"), BEHAVIOUR, ["client 4", "communication must be a number"]),
    (_with(CAPACITY, 1, "device_class", "toaster"), BEHAVIOUR, ["client 1", "unknown device_class 'toaster'"]),
    (CAPACITY, _with(BEHAVIOUR, 1, "active", [100, 150]), ["behaviour", "client 1", "overlap"]),
    (CAPACITY, _with(BEHAVIOUR, 1, "finish_time", _DROP), ["behaviour", "client 1", "'finish_time'"]),
    (CAPACITY, _with(BEHAVIOUR, 2, "active", [0, 5]), ["client 2", "2 active but 1 inactive"]),
    (CAPACITY, _with(BEHAVIOUR, 4, "inactive", [4000]), ["client 4", "after finish_time"]),
    (CAPACITY, _with(BEHAVIOUR, 4, "inactive", [math.nan]), ["client 4", "inactive[0]"]),
    (CAPACITY, _with(BEHAVIOUR, 3, "active", [-1, 600]), ["client 3", "active[0]", ">= 0"]),
    (CAPACITY, _with(BEHAVIOUR, 3, "active", [150, 600]), ["client 3", "empty or reversed"]),
    (CAPACITY, {**BEHAVIOUR, 99: BEHAVIOUR[1]}, ["behaviour", "client 99", "unknown client id"]),
    (CAPACITY, {k: v for k, v in BEHAVIOUR.items() if k != 3}, ["client 3", "no behaviour record"]),
    ({**CAPACITY, "1": CAPACITY[1]}, BEHAVIOUR, ["capacity", "client 1", "listed twice"]),
    ({}, BEHAVIOUR, ["capacity", "no clients"]),
    ([1, 2], BEHAVIOUR, ["capacity", "maps client ids to records"]),
    ({1: [50, 1000]}, BEHAVIOUR, ["capacity", "client 1", "must be a mapping"]),
]


@pytest.mark.parametrize("capacity, behaviour, words", CASES)
def test_one_line_naming_file_client_and_field(tmp_path, capsys, capacity, behaviour, words):
    cap, beh = write_pair(tmp_path, capacity, behaviour)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "fleet:\n  devices: 4\n  trace:\n    capacity: capacity.pkl\n    behaviour: behaviour.pkl\n"
        "    memory_class: rpi4_4gb\n    reference_flops_per_sample: 2.0e6\n"
        "coordinator: {clients_per_round: 2, over_selection: 0}\n")
    assert main([str(scenario), "--out", str(tmp_path / "out"), "--quiet", "--no-figures"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("fleet.run: scenario error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    if "unknown device_class" not in words[-1]:  # the rest are the files' own faults, found on reading
        with pytest.raises(TraceError):
            load_traces(cap, beh)


def test_too_few_clients_and_a_missing_file(tmp_path, capsys):
    write_pair(tmp_path)
    scenario = tmp_path / "s.yaml"
    scenario.write_text("fleet:\n  devices: 9\n  trace: {capacity: capacity.pkl, behaviour: nope.json,\n"
                        "    memory_class: rpi4_4gb, reference_flops_per_sample: 2.0e6}\n"
                        "coordinator: {clients_per_round: 2, over_selection: 0}\n")
    assert main([str(scenario), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "nope.json: no such trace file" in capsys.readouterr().err
    assert main([str(scenario), "--out", str(tmp_path / "out"), "--quiet", "--set",
                 "fleet.trace.behaviour=behaviour.pkl"]) == 2
    assert "needs 9 devices but the trace has 4 clients" in capsys.readouterr().err


BIG = "1" + "0" * 400  # 10**400: a JSON integer (and a pickled int) too large for a float
BIG_SHOWN = "1" + "0" * 56 + "..."
JSON_CASES = [  # (capacity file text, the message after the file's name)
    # Defect: a 401-digit integer crashed with OverflowError (a traceback, exit 1).
    ('{"1": {"computation": %s, "communication": 1000.0}}' % BIG,
     f"client 1: computation must be finite and > 0, got {BIG_SHOWN}"),
    ('{"1": {"computation": 50, "communication": 1000.0, "latency_s": -%s}}' % BIG,
     f"client 1: latency_s must be finite and >= 0, got -{BIG_SHOWN[:-4]}..."),
    # Defect: the later of two records of one client won silently; the CSV and pickle readers refuse it.
    ('{"1": {"computation": 50.0, "communication": 1000.0}, "3": {"computation": 5.0, "communication": 9.0},'
     ' "1": {"computation": 9.0, "communication": 1.0}}', "client 1: listed twice"),
    ('{"1": {"computation": 50.0, "communication": 1000.0, "computation": 9.0}}',
     "client 1: field 'computation' listed twice"),
    ('{"1": {"computation": 50.0, "communication": 1000.0, "note": {"a": 1, "a": 2}}}',
     "a JSON object lists the key 'a' twice"),
    # Defect: an overflowing rate named neither the file's client nor its field (now past the schema's bound).
    ('{"1": {"computation": 50.0, "communication": 1e308}}',
     "client 1: communication must be in [0.001, 1e+08] kbit/s (1 bit/s to 100 Gbit/s, as a scenario's link "
     "rates), got 1e+308"),
    ('{"1": {"computation": 50.0, "communication": 5.0, "download_kbit_per_s": 1e308}}',
     "client 1: download_kbit_per_s must be in [0.001, 1e+08] kbit/s (1 bit/s to 100 Gbit/s, as a scenario's "
     "link rates), got 1e+308"),
    ('{"1": {"computation": 50.0, "communication": 5.0, "loss_prob": 1.0}}',
     "client 1: loss_prob must be in [0, 0.99] (as a scenario's link loss_prob), got 1.0"),
]


def _run_one_client(tmp_path, capsys, capacity_name: str) -> str:
    """``fleet.run`` on one capacity client (no behaviour file): its exit status is 2; its one stderr line."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        f"fleet:\n  devices: 1\n  trace:\n    capacity: {capacity_name}\n"
        "    memory_class: rpi4_4gb\n    reference_flops_per_sample: 2.0e6\n"
        "coordinator: {clients_per_round: 1, over_selection: 0}\n")
    for extra in ([], ["--dry-run"]):
        assert main([str(scenario), "--out", str(tmp_path / "out"), "--quiet", "--no-figures", *extra]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1, err
    return err.rstrip("\n")


@pytest.mark.parametrize("text, message", JSON_CASES)
def test_json_faults_are_one_exact_line(tmp_path, capsys, text, message):
    (tmp_path / "capacity.json").write_text(text)
    line = _run_one_client(tmp_path, capsys, "capacity.json")
    assert line == f"fleet.run: scenario error: fleet.trace: {tmp_path / 'capacity.json'}: {message}"


def test_a_pickled_huge_int_is_one_exact_line(tmp_path, capsys):
    """Defect: ``10**400`` in a pickle crashed with OverflowError; also as an active time."""
    write_pair(tmp_path, {1: {"computation": 10**400, "communication": 1000.0}}, BEHAVIOUR)
    line = _run_one_client(tmp_path, capsys, "capacity.pkl")
    assert line == (f"fleet.run: scenario error: fleet.trace: {tmp_path / 'capacity.pkl'}: client 1: "
                    f"computation must be finite and > 0, got {BIG_SHOWN}")
    behaviour = {1: {"active": [10**400], "inactive": [10], "finish_time": 100}}
    with pytest.raises(TraceError, match=r"^\S+behaviour.pkl: client 1: active\[0\] must be a finite time >= 0 s, "
                                         r"got 1000+\.\.\.$"):
        load_traces(*write_pair(tmp_path, CAPACITY, behaviour))
