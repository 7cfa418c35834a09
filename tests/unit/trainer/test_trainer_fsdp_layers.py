"""Which modules FSDP shards as units: the outermost of the classes HF marks unsplittable."""

from __future__ import annotations

import pytest
import torch

from marco_trainer.train.fsdp import layers, shard


class Attn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(2, 2)


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = Attn()


class Tower(torch.nn.Module):
    # As Qwen2-Audio's: an attention class listed beside the layer class that holds it.
    _no_split_modules = ("Block", "Attn")

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block(), Block()])
        self.loose = Attn()  # listed and outside every Block: a unit of its own


class Wrapper(torch.nn.Module):
    """As peft's wrapper: no list of its own, the wrapped model's counts."""

    def __init__(self) -> None:
        super().__init__()
        self.base = Tower()


def test_units_are_the_outermost_listed_modules_also_inside_a_wrapper():
    model = Wrapper()
    found = layers(model)
    expected = [*model.base.blocks, model.base.loose]
    assert [id(m) for m in found] == [id(m) for m in expected]


def test_a_model_naming_no_layer_is_refused_naming_the_flag():
    with pytest.raises(ValueError, match=r"--strategy fsdp: Sequential names no transformer"):
        shard(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.device("cpu"), 2, bf16=False)
