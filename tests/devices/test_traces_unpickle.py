"""A trace pickle builds plain data or nothing: a pickle that would run code runs nothing."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from devices.traces import TraceError, load_plain, load_traces, read_trace_file

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    """Pickles as a call of ``open(marker, 'w')``: unpickled by ``pickle.load``, it creates the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


class _System:
    def __reduce__(self):
        return os.system, ("echo pwned",)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_a_reduce_payload_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "ran"
    raw = pickle.dumps({1: {"computation": 50.0, "communication": _Payload(marker)}}, protocol=protocol)
    pickle.loads(raw)  # the control: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "capacity.pkl"
    path.write_bytes(raw)
    with pytest.raises(TraceError) as err:
        load_traces(path)
    assert not marker.exists()
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "open" in message


def test_the_cli_refuses_it_in_one_line_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "capacity.pkl").write_bytes(pickle.dumps({1: {"computation": 50.0, "communication": 10.0,
                                                              "x": _Payload(marker)}}))
    (tmp_path / "s.yaml").write_text(
        "fleet:\n  devices: 1\n  trace: {capacity: capacity.pkl, memory_class: rpi4_4gb,\n"
        "    reference_flops_per_sample: 1e6}\ncoordinator: {clients_per_round: 1, over_selection: 0}\n")
    result = subprocess.run([sys.executable, "-m", "fleet.run", str(tmp_path / "s.yaml"), "--out",
                             str(tmp_path / "out"), "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert not marker.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "capacity.pkl" in lines[0] and "not a plain-data pickle" in lines[0]


@pytest.mark.parametrize("value, what", [(b"bytes", "bytes"), ({1, 2}, "set"), (bytearray(b"x"), "global"),
                                         (frozenset({1}), "frozenset"), (_System(), "global")])
def test_only_dicts_lists_numbers_and_strings(value, what):
    with pytest.raises(TraceError, match=what):
        load_plain(pickle.dumps({"1": value}, protocol=4), "f.pkl")


def test_persistent_ids_and_garbage_are_refused(tmp_path):
    class Persist(pickle.Pickler):
        def persistent_id(self, obj):
            return "ref" if obj == "secret" else None

    import io
    buf = io.BytesIO()
    Persist(buf, protocol=4).dump({"1": "secret"})
    with pytest.raises(TraceError, match="persistent id"):
        load_plain(buf.getvalue(), "f.pkl")
    for raw in (b"", b"garbage", pickle.dumps([1, 2])[:-3]):
        with pytest.raises(TraceError, match="not a plain-data pickle"):
            load_plain(raw, "f.pkl")


def test_shared_and_cyclic_references_are_walked_once():
    inner = [1.0] * 10
    nested = inner
    for _ in range(200):  # 2**200 leaves if expanded; 200 distinct lists
        nested = [nested, nested]
    loaded = load_plain(pickle.dumps(nested, protocol=4), "f.pkl")
    assert loaded[0] is loaded[1]  # shared, not copied (comparing with == would walk 2**200 leaves)
    cyclic: list = []
    cyclic.append(cyclic)
    loaded = load_plain(pickle.dumps(cyclic, protocol=4), "f.pkl")
    assert loaded[0] is loaded


def test_not_a_regular_file_and_unknown_suffix(tmp_path):
    with pytest.raises(TraceError, match="not a regular file"):
        read_trace_file(_dir(tmp_path))
    with pytest.raises(TraceError, match="unknown trace format"):
        read_trace_file(tmp_path / "trace.txt")
    with pytest.raises(TraceError, match="no such trace file"):
        read_trace_file(tmp_path / "absent.json")


def _dir(tmp_path: Path) -> Path:
    folder = tmp_path / "folder.pkl"
    folder.mkdir()
    return folder
