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


def test_sharded_loads_refuse_weights_that_do_not_fit():
    """set_model_state_dict runs with strict off (tied weights a save leaves out): the fit
    is checked before it, or a rollback to mismatched weights would change nothing."""
    from marco_trainer.train.fsdp import load_weights

    layer = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        load_weights(
            layer, {"weight": torch.ones(2, 2), "bias": torch.ones(2), "extra": layer.bias}
        )
    with pytest.raises(ValueError, match=r"missing \['bias'\]"):
        load_weights(layer, {"weight": torch.ones(2, 2)})
    load_weights(layer, {"weight": torch.ones(2, 2)}, complete=False)  # an adapter's subset
    assert torch.equal(layer.weight.detach(), torch.ones(2, 2))


def test_saved_weights_are_read_from_an_index_of_files(tmp_path):
    """A large model's checkpoint is split over files named by model.safetensors.index.json."""
    import json

    from safetensors.torch import save_file

    from marco_trainer.models.base import AsrModel

    weight, bias = torch.arange(4.0).reshape(2, 2), torch.tensor([5.0, 6.0])
    save_file({"weight": weight}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"bias": bias}, tmp_path / "model-00002-of-00002.safetensors")
    index = {
        "weight": "model-00001-of-00002.safetensors",
        "bias": "model-00002-of-00002.safetensors",
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
    asr = AsrModel(torch.nn.Linear(2, 2), None, source="", language=None, task="transcribe")  # type: ignore[arg-type]
    state = asr.saved_state(tmp_path)
    assert state.keys() == {"weight", "bias"}
    assert torch.equal(state["weight"], weight) and torch.equal(state["bias"], bias)
