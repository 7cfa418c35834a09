"""marco_contract.argv: an options model as flags, and flags back into the model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from marco_contract.argv import Flag, add_arguments, parse_options, to_argv


class Inner(BaseModel):
    rank: int = Field(default=4, ge=1, description="Rank, 100% of it.")
    names: list[str] = Field(default_factory=lambda: ["a", "b"])


class Outer(BaseModel):
    steps: int = 10
    rate: float = 0.5
    mode: Literal["fast", "slow"] = "fast"
    switch: bool = False
    label: str | None = None
    folder: Path = Path("/tmp/x")
    inputs: Annotated[list[str], Flag("input", repeat=True)] = Field(default_factory=list)
    inner: Inner = Field(default_factory=Inner)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p, Outer)
    return p


def test_each_field_is_one_flag_named_after_it():
    options = Outer(steps=3, rate=1e-05, mode="slow", switch=True, label="run", folder=Path("/d"),
                    inputs=["x,1", "y"], inner=Inner(rank=2, names=["q", "v"]))  # fmt: skip
    assert to_argv(options) == [
        "--steps", "3", "--rate", "1e-05", "--mode", "slow", "--switch", "--label", "run",
        "--folder", "/d", "--input", "x,1", "--input", "y",
        "--inner-rank", "2", "--inner-names", "q,v",
    ]  # fmt: skip


def test_false_is_written_and_none_left_out():
    argv = to_argv(Outer())
    assert "--no-switch" in argv and "--label" not in argv and "--input" not in argv


def test_only_the_named_models_fields_are_written():
    class Spec(Inner):
        enabled: bool = True

    assert to_argv(Spec(rank=5), Inner) == ["--rank", "5", "--names", "a,b"]


def test_a_comma_inside_a_joined_item_is_refused():
    with pytest.raises(ValueError, match="--inner-names"):
        to_argv(Outer(inner=Inner(names=["a,b"])))


def test_parsed_flags_give_back_the_model():
    argv = ["--steps", "3", "--rate", "1e-05", "--mode", "slow", "--switch", "--label", "run",
            "--folder", "/d", "--input", "x,1", "--input", "y",
            "--inner-rank", "2", "--inner-names", "q,v"]  # fmt: skip
    options = parse_options(Outer, parser().parse_args(argv))
    assert options == Outer(steps=3, rate=1e-05, mode="slow", switch=True, label="run",
                            folder=Path("/d"), inputs=["x,1", "y"],
                            inner=Inner(rank=2, names=["q", "v"]))  # fmt: skip


def test_no_flags_give_the_models_defaults():
    assert parse_options(Outer, parser().parse_args([])) == Outer()


def test_types_and_choices_are_checked_by_the_parser():
    for argv in (["--steps", "many"], ["--mode", "medium"]):
        with pytest.raises(SystemExit):
            parser().parse_args(argv)


def test_a_bound_is_checked_by_the_model_and_the_flag_named():
    with pytest.raises(ValueError, match=r"invalid value for --inner-rank: .*greater than or eq"):
        parse_options(Outer, parser().parse_args(["--inner-rank", "0"]))


def test_help_shows_description_and_default():
    text = parser().format_help()
    assert "Rank, 100% of it. (default: 4)" in text and "(default: a,b)" in text
