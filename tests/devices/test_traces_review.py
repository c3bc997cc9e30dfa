"""An outside review's trace defects: figures past the scenario schema's bounds, a CSV with a byte-order mark,
and files that are empty or hold only a header. Each fault is one exact line naming the file, client and field."""

import codecs
import json
import math
import pickle

import numpy as np
import pytest

from devices.traces import DeviceTrace, TraceError, load_traces, read_trace_file, trace_fleet
from devices.traces.bounds import MAX_LATENCY_S, MAX_RATE_BIT_PER_S, MIN_RATE_BIT_PER_S
from fleet.app.export_fleet import main as export_main
from tests.app.test_trace_scenario import ROOT
from tests.devices.test_traces_errors import _run_one_client

RATES = "must be in [0.001, 1e+08] kbit/s (1 bit/s to 100 Gbit/s, as a scenario's link rates)"
OUT_OF_BOUNDS = [  # (extra record fields, the message after "<file>: client 1: ")
    # Defect: latency_s 1e300 was accepted; with one device the run idled to max_sim_time, 0 rounds.
    ({"latency_s": 1e300}, "latency_s must be in [0, 3600] s (as a scenario's link latency), got 1e+300"),
    ({"latency_s": math.nextafter(3600.0, math.inf)},
     "latency_s must be in [0, 3600] s (as a scenario's link latency), got 3600.0000000000005"),
    # Defect: a rate of 1e-300 kbit/s was accepted; the schema's least rate is 1 bit/s.
    ({"communication": 1e-300}, f"communication {RATES}, got 1e-300"),
    ({"communication": 1e300}, f"communication {RATES}, got 1e+300"),
    ({"upload_kbit_per_s": 0.0009}, f"upload_kbit_per_s {RATES}, got 0.0009"),
    ({"download_kbit_per_s": 1.5e8}, f"download_kbit_per_s {RATES}, got 150000000.0"),
    ({"computation": 1e300},
     "computation must be in (0, 1e+12] ms (at most 1e+09 s per sample, a scenario's longest time), got 1e+300"),
    ({"loss_prob": 0.995}, "loss_prob must be in [0, 0.99] (as a scenario's link loss_prob), got 0.995"),
    ({"background_phase_rad": 7.0}, "background_phase_rad must be in [0, 2 pi) (a phase), got 7.0"),
    ({"battery_j_at_start": -1.0}, "battery_j_at_start must be finite and >= 0, got -1.0"),
]


def _capacity(tmp_path, **fields) -> str:
    path = tmp_path / "capacity.json"
    path.write_text(json.dumps({"1": {"computation": 50.0, "communication": 1000.0, **fields}}))
    return str(path)


@pytest.mark.parametrize("fields, message", OUT_OF_BOUNDS)
def test_a_figure_past_the_schemas_bound_is_one_exact_line(tmp_path, fields, message):
    path = _capacity(tmp_path, **fields)
    with pytest.raises(TraceError) as caught:
        load_traces(path)
    assert str(caught.value) == f"{path}: client 1: {message}"


def test_a_huge_latency_stops_fleet_run_with_exit_2(tmp_path, capsys):
    """The review's run: one device whose latency is 1e300 s ran to max_sim_time with no round."""
    _capacity(tmp_path, latency_s=1e300)
    line = _run_one_client(tmp_path, capsys, "capacity.json")
    assert line == (f"fleet.run: scenario error: fleet.trace: {tmp_path / 'capacity.json'}: client 1: "
                    "latency_s must be in [0, 3600] s (as a scenario's link latency), got 1e+300")


def test_the_bounds_themselves_are_accepted(tmp_path):
    path = _capacity(tmp_path, communication=0.001, download_kbit_per_s=1e8, latency_s=3600.0, loss_prob=0.99,
                     computation=1e12)
    (trace,) = load_traces(path)
    built = trace_fleet([trace], 2e6, [("rpi4_4gb", 1.0)], "wifi", np.random.default_rng(0))
    p = built.fleet[0]
    assert (p.up_bit_per_s, p.down_bit_per_s) == (MIN_RATE_BIT_PER_S, MAX_RATE_BIT_PER_S)
    assert (p.latency_s, p.loss_prob, p.flops_per_s) == (MAX_LATENCY_S, 0.99, 2e6 / 1e9)


def test_finish_time_past_the_longest_time_is_refused(tmp_path):
    capacity = _capacity(tmp_path)
    behaviour = tmp_path / "behaviour.json"
    behaviour.write_text(json.dumps({"1": {"active": [0], "inactive": [10], "finish_time": 1e300}}))
    with pytest.raises(TraceError) as caught:
        load_traces(capacity, behaviour)
    assert str(caught.value) == (f"{behaviour}: client 1: finish_time must be in (0, 1e+09] s (a scenario's "
                                 "longest period), got 1e+300")


def test_an_overflowing_rate_built_in_code_still_names_its_field():
    """``trace_fleet`` keeps its own check for records that were not read from a file."""
    trace = DeviceTrace("7", 50.0, 5.0, download_kbit_per_s=1e308)
    with pytest.raises(TraceError, match=r"^t: client 7: download_kbit_per_s 1e\+308 kbit/s overflows in bit/s$"):
        trace_fleet([trace], 2e6, [("rpi4_4gb", 1.0)], "wifi", np.random.default_rng(0), where="t")


CSV_TEXT = "client_id,computation,communication\n1,5,100\n2,7.5,250\n"


@pytest.mark.parametrize("suffix, text", [(".csv", CSV_TEXT),
                                          (".json", '{"1": {"computation": 5, "communication": 100}, '
                                                    '"2": {"computation": 7.5, "communication": 250}}')])
def test_a_byte_order_mark_is_accepted(tmp_path, suffix, text):
    """Defect: Excel's UTF-8 CSV (a BOM first) failed with "the CSV header has no client_id column"."""
    path = tmp_path / f"capacity{suffix}"
    path.write_bytes(codecs.BOM_UTF8 + text.encode())
    traces = load_traces(path)
    assert [(t.client_id, t.computation_ms, t.communication_kbit_per_s) for t in traces] == [
        ("1", 5.0, 100.0), ("2", 7.5, 250.0)]


def test_a_bad_byte_after_a_bom_is_counted_from_the_files_start(tmp_path):
    path = tmp_path / "capacity.json"
    path.write_bytes(codecs.BOM_UTF8 + b'{"1": \xff}')
    with pytest.raises(TraceError) as caught:
        read_trace_file(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (byte 9)"


@pytest.mark.parametrize("name, raw", [("c.json", b""), ("c.json", b" \n\t\n"), ("c.csv", b""),
                                       ("c.csv", b"\n\n"), ("c.pkl", b""), ("c.csv", codecs.BOM_UTF8)])
def test_an_empty_file_says_so(tmp_path, name, raw):
    """Before: "not valid JSON (Expecting value: line 1 column 1 (char 0))", "pickle data was truncated"."""
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(TraceError) as caught:
        read_trace_file(path)
    assert str(caught.value) == f"{path}: empty file"


@pytest.mark.parametrize("text, message", [
    ("client_id,computation,communication\n", "the capacity trace has no clients"),
    ("1,5,100\n2,7,250\n", "the CSV header (its first line) has no client_id column; it reads '1,5,100'"),
    ("client_id,computation,communication\n1,nan,100\n", "client 1: computation must be finite and > 0, got nan"),
    ("client_id,computation,communication\n1,5,inf\n", "client 1: communication must be finite and > 0, got inf"),
    ("client_id,computation,communication\n1,5,1e400\n", "client 1: communication must be finite and > 0, got inf"),
    ("client_id,computation,communication,latency_s\n1,5,100,-0.5\n",
     "client 1: latency_s must be finite and >= 0, got -0.5"),
])
def test_csv_faults_are_one_exact_line(tmp_path, text, message):
    path = tmp_path / "capacity.csv"
    path.write_text(text)
    with pytest.raises(TraceError) as caught:
        load_traces(path)
    assert str(caught.value) == f"{path}: {message}"


def test_a_pickled_nan_or_huge_float_is_refused(tmp_path):
    path = tmp_path / "capacity.pkl"
    for value, shown in ((math.nan, "finite and > 0, got nan"), (-math.inf, "finite and > 0, got -inf"),
                         (2e8, "in [0.001, 1e+08] kbit/s (1 bit/s to 100 Gbit/s, as a scenario's link rates), "
                               "got 200000000.0")):
        path.write_bytes(pickle.dumps({1: {"computation": 5.0, "communication": value}}))
        with pytest.raises(TraceError) as caught:
            load_traces(path)
        assert str(caught.value) == f"{path}: client 1: communication must be {shown}"


def test_an_export_past_a_bound_is_refused_not_written(tmp_path, capsys):
    """A lognormal spread can draw a latency past the schema's bound for the median; its replay would be
    refused, so the export is (exit 2, one line), before anything is written."""
    text = (ROOT / "scenarios" / "smoke.yaml").read_text()
    entry = "{device_class: esp32_s3_psram, link_class: wifi, fraction: 0.3}"
    source = tmp_path / "slow.yaml"
    source.write_text(text.replace(entry, "{device_class: esp32_s3_psram, link_class: wifi, fraction: 0.3, "
                                          "link: {latency_s: 3600, latency_sigma: 2}}"))
    out = tmp_path / "fleet.json"
    assert export_main([str(source), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "python -m fleet.export_fleet: scenario error: the exported fleet: client 27: latency_s must be in "
        "[0, 3600] s (as a scenario's link latency), got 4397.8362969506015\n")
    assert not out.exists()


def test_fleet_records_of_a_plain_fleet_pass_the_reader(tmp_path):
    """The export's own check accepts what an ordinary scenario draws (smoke: 50 devices)."""
    out = tmp_path / "fleet.json"
    assert export_main([str(ROOT / "scenarios" / "smoke.yaml"), "--out", str(out)]) == 0
    assert len(load_traces(out, out)) == 50
