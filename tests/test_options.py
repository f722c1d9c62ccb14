"""The run options are one table: every RunOptions field a user can set has exactly one option
spec, and the node's flags for the defaults are only those spelled out always."""

from __future__ import annotations

from dataclasses import fields

from moetrace import cli
from moetrace.options import RUN_OPTIONS, RunOptions, node_flags


def test_every_field_has_one_option():
    specs = [s.field for s in RUN_OPTIONS if s.field]
    assert len(specs) == len(set(specs))
    assert set(specs) == {f.name for f in fields(RunOptions)} - {"grace_s"}  # grace_s: not on the command line


def test_the_cli_has_every_option():
    names = {p.name for p in cli.run.params}
    assert {s.name for s in RUN_OPTIONS} <= names


def test_defaults_spell_only_what_is_always_given():
    flags = node_flags(RunOptions(engine="sglang", engine_python="/p"))
    assert flags == ["--engine", "sglang", "--device", "auto", "--batch-size", "1", "--engine-python", "/p"]
