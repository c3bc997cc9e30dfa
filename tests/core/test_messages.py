"""The message vocabulary (fleet/core/messages.py): one list of causes, one of phases, used everywhere."""

from __future__ import annotations

from dataclasses import fields
from typing import get_args

import algorithms.base
from fleet.bridge import schema
from fleet.core import messages
from fleet.core.messages import CAUSES, PHASES, Cause, Leave, Phase, Refusal, Task


def test_one_list_of_causes_and_one_of_phases():
    assert CAUSES == ("memory", "deadline", "offline", "battery", "link", "failure", "flops")
    assert CAUSES == get_args(Cause)
    assert PHASES is algorithms.base.PHASES and get_args(Phase) == PHASES
    assert schema.CAUSES is CAUSES and schema.PHASES is PHASES  # the bridge refuses for the same reasons


def test_fields_name_their_closed_lists():
    types = {cls: {f.name: f.type for f in fields(cls)} for cls in (Task, Refusal, Leave)}
    assert types[Task]["phase"] == "Phase"
    assert types[Refusal]["cause"] == types[Leave]["cause"] == "Cause"


def test_the_vocabulary_is_four_messages():
    assert set(get_args(messages.Message)) == {Task, messages.Update, Refusal, Leave}
    assert all(hasattr(messages, name) for name in messages.__all__)
