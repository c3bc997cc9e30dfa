"""``fleet.simulate``'s and ``write``'s arguments: each checked before anything is made or run, one line naming
it; and an ``out`` folder a failed run made is not left behind empty (``fleet.app.out_folder``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.api import OutFolderError, ScenarioError, simulate
from fleet.app.out_folder import check_out_folder, out_folder, remove_if_empty
from tests.devices.trace_files import CAPACITY, write_pair

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios/smoke.yaml"
TINY = {"fleet": {"devices": 8}, "coordinator": {"rounds": 1, "clients_per_round": 2}}


@pytest.fixture
def never_runs(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("ran")

    monkeypatch.setattr("fleet.app.simulation.run_scenario", never)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"set": 5}, TypeError,
     "set must be a dict of dotted path -> value or a list of 'path=value' strings, got int"),
    ({"set": {1: 2}}, TypeError, "set: key 1 (int) is not a str (a dotted path such as 'coordinator.rounds')"),
    ({"set": ["seed=3", 4]}, TypeError, "set: 4 (int) is not a 'path=value' str"),
    ({"seed": "3"}, TypeError, "seed must be an int or None, got str"),
    ({"seed": True}, TypeError, "seed must be an int or None, got bool"),
    ({"variant": 1}, TypeError, "variant must be a variant's name (a str) or None, got int"),
    ({"figures": "no"}, TypeError, "figures must be True or False, got 'no'"),
    ({"events": "xml"}, ValueError, "events must be one of auto, csv, parquet, got 'xml'"),
    ({"events": None}, ValueError, "events must be one of auto, csv, parquet, got None"),
    ({"on_round": 1}, TypeError, "on_round must be a function of the rounds done, or None, got int"),
    ({"out": 3}, TypeError, "out must be a folder's path (a str or a Path), got int"),
    ({"out": ""}, OutFolderError, "out '': an empty path (use '.' for the working directory)"),
])
def test_a_bad_argument_is_one_line_naming_it_before_anything_runs(kwargs, error, message, tmp_path,
                                                                  monkeypatch, never_runs):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as caught:
        simulate(SMOKE, **kwargs)
    assert type(caught.value) is error and str(caught.value) == message
    assert list(tmp_path.iterdir()) == []


def test_events_is_checked_without_out_too(never_runs):
    with pytest.raises(ValueError, match=r"^events must be one of auto, csv, parquet, got 'xml'$"):
        simulate(SMOKE, events="xml")


def test_an_out_that_is_a_file_or_cannot_be_made_is_an_out_folder_error(tmp_path, never_runs):
    (tmp_path / "t1.py").write_text("x")
    with pytest.raises(OutFolderError) as caught:
        simulate(SMOKE, out=tmp_path / "t1.py")
    assert str(caught.value) == f"out {tmp_path / 't1.py'}: not a directory"
    with pytest.raises(OutFolderError) as caught:
        simulate(SMOKE, out=str(tmp_path / "t1.py" / "sub"))
    assert str(caught.value) == f"out {tmp_path / 't1.py' / 'sub'}: not a writable folder (Not a directory)"
    assert isinstance(caught.value, ValueError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t1.py"]


def test_a_scenario_error_makes_no_out_folder(tmp_path):
    with pytest.raises(ScenarioError):
        simulate(SMOKE, set={"fleet.devices": -3}, out=tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


def _broken_trace_scenario(folder: Path) -> dict:
    """A trace scenario whose capacity trace has a negative computation time: found while building the fleet."""
    capacity, behaviour = write_pair(folder, {**CAPACITY, 3: {"computation": -5.0, "communication": 100.0}},
                                     suffix=".json")
    return {"fleet": {"devices": 4, "trace": {"capacity": str(capacity), "behaviour": str(behaviour),
                                              "memory_class": "phone_mid", "link_class": "lte"}},
            "coordinator": {"rounds": 1, "clients_per_round": 2}}


def test_a_run_that_fails_while_building_leaves_no_out_folder(tmp_path):
    scenario = _broken_trace_scenario(tmp_path)
    for out in (tmp_path / "o", tmp_path / "a" / "b"):
        with pytest.raises(ScenarioError, match=r"client 3: computation must be finite and > 0, got -5\.0"):
            simulate(scenario, out=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["behaviour.json", "capacity.json"]
    variants = {**scenario, "variants": {"one": [], "two": ["seed=2"]}}
    with pytest.raises(ScenarioError):
        simulate(variants, out=tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_a_failed_run_leaves_a_folder_that_existed_or_holds_a_file(tmp_path):
    scenario = _broken_trace_scenario(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "note.txt").write_text("mine")
    for out in ("empty", "kept"):
        with pytest.raises(ScenarioError):
            simulate(scenario, out=tmp_path / out)
    assert list((tmp_path / "empty").iterdir()) == []
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["note.txt"]


def test_write_checks_its_arguments_before_making_the_folder(tmp_path):
    run = simulate(TINY)
    with pytest.raises(ValueError, match=r"^events must be one of auto, csv, parquet, got 'xml'$"):
        run.write(tmp_path / "w", events="xml")
    with pytest.raises(TypeError, match=r"^figures must be True or False, got 'no'$"):
        run.write(tmp_path / "w", figures="no")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutFolderError, match="not a directory"):
        run.write(tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert run.write(tmp_path / "w", figures=False) == tmp_path / "w"
    assert (tmp_path / "w" / "summary.json").is_file()


def test_out_folder_removes_only_what_it_made_and_only_while_empty(tmp_path):
    assert check_out_folder(tmp_path) is None  # there already
    assert check_out_folder(tmp_path / "a" / "b", "out") == tmp_path / "a"
    assert remove_if_empty(tmp_path / "a") and not (tmp_path / "a").exists()
    with pytest.raises(KeyError), out_folder(tmp_path / "x" / "y") as made:
        (made / "checkpoints").mkdir()  # empty folders only: still nothing written
        raise KeyError("failed")
    assert not (tmp_path / "x").exists()
    with pytest.raises(KeyError), out_folder(tmp_path / "z") as made:
        (made / "events.csv").write_text("")
        raise KeyError("failed")
    assert (tmp_path / "z" / "events.csv").is_file()
    with out_folder(tmp_path / "ok"):
        pass
    assert (tmp_path / "ok").is_dir()  # made and kept when nothing fails
    assert not remove_if_empty(None) and not remove_if_empty(tmp_path / "gone")
    with pytest.raises(OutFolderError, match=r"^--out .*: not a directory$"):
        check_out_folder(tmp_path / "z" / "events.csv")


def test_a_checkpoint_stamp_alone_is_no_output(tmp_path):
    """Defect: a learning run that failed before its first round (a bridge whose devices never came) left
    OUT/checkpoints/scenario.sha256, so the folder it made stayed. A stamp beside a checkpoint is kept."""
    with pytest.raises(KeyError), out_folder(tmp_path / "a") as made:
        (made / "checkpoints").mkdir()
        (made / "checkpoints" / "scenario.sha256").write_text("f00\n")
        raise KeyError("failed")
    assert not (tmp_path / "a").exists()
    with pytest.raises(KeyError), out_folder(tmp_path / "b") as made:
        (made / "checkpoints").mkdir()
        (made / "checkpoints" / "scenario.sha256").write_text("f00\n")
        (made / "checkpoints" / "version_000001.ckpt").write_bytes(b"")
        raise KeyError("failed")
    assert (tmp_path / "b" / "checkpoints" / "scenario.sha256").is_file()
    (tmp_path / "c" / "checkpoints").mkdir(parents=True)
    (tmp_path / "c" / "scenario.sha256").write_text("")  # the name outside checkpoints/: a file like any other
    assert not remove_if_empty(tmp_path / "c")
