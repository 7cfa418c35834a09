"""Parsing and mapping refuse what they cannot map, naming the variable."""

import dataclasses
import struct

import numpy as np
import pytest

from marco_demo.ct2_import import (
    Ct2ImportError,
    Ct2Model,
    hf_state_dict,
    parse_model_bin,
    special_tokens,
    timestamp_tokens,
    whisper_dims,
)


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def model_bin(variables: dict[str, np.ndarray], aliases: dict[str, str]) -> bytes:
    """Write the layout the docs describe, independently of the parser."""
    codes = {np.dtype("float16"): 4, np.dtype("float32"): 0, np.dtype("int8"): 1}
    out = struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<I", 3)
    out += struct.pack("<I", len(variables))
    for name, value in variables.items():
        out += _string(name) + struct.pack("<B", value.ndim)
        out += b"".join(struct.pack("<I", d) for d in value.shape)
        out += struct.pack("<BI", codes[value.dtype], value.nbytes) + value.tobytes()
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += _string(alias) + _string(target)
    return out


def test_parse_round_trip_keeps_names_shapes_values_and_aliases():
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    flag = np.array(3, dtype=np.int8)
    data = model_bin(
        {"decoder/embeddings/weight": weight, "decoder/activation": flag},
        {"decoder/projection/weight": "decoder/embeddings/weight"},
    )
    model = parse_model_bin(data)
    assert model.spec == "WhisperSpec" and model.revision == 3
    assert np.array_equal(model.get("decoder/projection/weight"), weight)
    assert int(model.get("decoder/activation")) == 3


def test_truncated_file_names_the_variable():
    data = model_bin({"encoder/conv1/bias": np.ones(4, dtype=np.float16)}, {})
    with pytest.raises(Ct2ImportError, match="encoder/conv1/bias"):
        parse_model_bin(data[:-10])


def test_alias_to_nothing_is_refused():
    data = model_bin({"a": np.ones(1, dtype=np.float16)}, {"b": "missing"})
    with pytest.raises(Ct2ImportError, match="missing"):
        parse_model_bin(data)


@pytest.fixture(scope="module")
def real_model() -> Ct2Model:
    from marco_demo.ct2_import import default_source

    return parse_model_bin((default_source() / "model.bin").read_bytes())


def _edit(model: Ct2Model, **changes) -> Ct2Model:
    variables = dict(model.variables)
    for name, value in changes.items():
        name = name.replace("__", "/")
        if value is None:
            del variables[name]
        else:
            variables[name] = value
    return dataclasses.replace(model, variables=variables)


def test_real_model_maps_completely(real_model):
    dims = whisper_dims(real_model)
    assert (dims.d_model, dims.vocab_size, dims.encoder_layers, dims.decoder_layers) == (
        384,
        51864,
        4,
        4,
    )
    assert (dims.encoder_attention_heads, dims.num_mel_bins, dims.multilingual) == (6, 80, False)
    state = hf_state_dict(real_model, dims)
    fused = real_model.get("encoder/layer_0/self_attention/linear_0/weight").astype(np.float32)
    assert np.array_equal(state["model.encoder.layers.0.self_attn.v_proj.weight"], fused[768:])
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in state
    cross = real_model.get("decoder/layer_1/attention/linear_1/bias").astype(np.float32)
    assert np.array_equal(state["model.decoder.layers.1.encoder_attn.v_proj.bias"], cross[384:])


def test_unmapped_variable_is_named(real_model):
    extra = _edit(real_model, encoder__layer_0__adapter__weight=np.zeros(3, np.float16))
    with pytest.raises(Ct2ImportError, match="encoder/layer_0/adapter/weight"):
        hf_state_dict(extra, whisper_dims(extra))


def test_missing_variable_is_named(real_model):
    broken = _edit(real_model, decoder__layer_2__ffn__layer_norm__gamma=None)
    with pytest.raises(Ct2ImportError, match="decoder/layer_2/ffn/layer_norm/gamma"):
        hf_state_dict(broken, whisper_dims(broken))


def test_wrong_shape_is_named(real_model):
    broken = _edit(real_model, encoder__layer_1__ffn__linear_1__bias=np.zeros(385, np.float16))
    with pytest.raises(Ct2ImportError, match=r"encoder/layer_1/ffn/linear_1/bias.*\(385,\)"):
        hf_state_dict(broken, whisper_dims(broken))


def test_key_bias_must_be_zero(real_model):
    name = "encoder/layer_3/self_attention/linear_0/bias"
    bias = real_model.get(name).copy()
    bias[400] = 1
    broken = _edit(real_model, **{name.replace("/", "__"): bias})
    with pytest.raises(Ct2ImportError, match=name):
        hf_state_dict(broken, whisper_dims(broken))


def test_unsupported_activation_is_refused(real_model):
    broken = _edit(real_model, decoder__activation=np.array(0, np.int8))
    with pytest.raises(Ct2ImportError, match="decoder/activation"):
        whisper_dims(broken)


def test_special_tokens_and_timestamps():
    tokenizer = {
        "model": {"vocab": {"a": 0, "b": 1}},
        "added_tokens": [
            {"id": 2, "content": "<|endoftext|>"},
            {"id": 3, "content": "<|startoftranscript|>"},
            {"id": 4, "content": "<|startofprev|>"},
            {"id": 5, "content": "<|notimestamps|>"},
        ],
    }
    tokens = special_tokens(tokenizer)
    assert (tokens.startoftranscript, tokens.timestamp_begin, tokens.total_ids) == (3, 6, 6)
    assert timestamp_tokens(1501)[-1] == "<|30.00|>"
    del tokenizer["added_tokens"][3]
    with pytest.raises(Ct2ImportError, match="notimestamps"):
        special_tokens(tokenizer)


def test_cli_names_a_missing_source_file(tmp_path):
    from tests.demo_runs import run_demo

    (tmp_path / "src").mkdir()
    done = run_demo(
        "import-ct2", "--source", str(tmp_path / "src"), "--output-dir", str(tmp_path / "out")
    )
    assert done.returncode == 2
    assert "model.bin: file not found" in done.stderr
    assert not (tmp_path / "out").exists()


def test_shrinking_the_encoder_window_keeps_the_first_positions():
    import numpy as np
    import pytest

    from marco_demo.ct2_import import (
        POSITIONS_KEY,
        Ct2ImportError,
        WhisperDims,
        shrink_encoder_window,
    )

    dims = WhisperDims(
        vocab_size=10, d_model=4, num_mel_bins=80, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=1, decoder_attention_heads=1, encoder_ffn_dim=8,
        decoder_ffn_dim=8, max_source_positions=1500, max_target_positions=448,
    )  # fmt: skip
    positions = np.arange(1500 * 4, dtype=np.float32).reshape(1500, 4)
    other = np.ones(3, dtype=np.float32)
    small, state = shrink_encoder_window(dims, {POSITIONS_KEY: positions, "x": other}, 10)
    assert small.max_source_positions == 500  # 10 s of 10 ms mel frames, conv stride 2
    assert np.array_equal(state[POSITIONS_KEY], positions[:500])
    assert state["x"] is other and dims.max_source_positions == 1500  # inputs untouched
    with pytest.raises(Ct2ImportError, match="--window-seconds"):
        shrink_encoder_window(dims, {POSITIONS_KEY: positions}, 31)
