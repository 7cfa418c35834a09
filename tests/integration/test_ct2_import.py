"""The imported Whisper tiny.en is real: it hears clean speech and fails on a phone line."""

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from marco_demo.ct2_import import default_source, hf_state_dict, parse_model_bin, whisper_dims
from marco_demo.phone_line import ChannelParams, telephony_channel
from marco_demo.synth import Voice, speak

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
NORMALISE = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(
        reference, hypothesis, reference_transform=NORMALISE, hypothesis_transform=NORMALISE
    )


def transcribe(model, processor, path) -> str:
    audio, rate = sf.read(path, dtype="float32")
    if rate != 16000:
        audio = resample_poly(audio, 16000, rate).astype(np.float32)
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        tokens = model.generate(features, max_new_tokens=64)
    return processor.batch_decode(tokens, skip_special_tokens=True)[0]


def test_every_parameter_comes_from_model_bin(whisper_tiny_dir):
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(whisper_tiny_dir)
    ct2 = parse_model_bin((default_source() / "model.bin").read_bytes())
    expected = hf_state_dict(ct2, whisper_dims(ct2))
    state = model.state_dict()
    assert set(state) == set(expected) | {"proj_out.weight"}
    for key, value in expected.items():
        assert torch.equal(state[key], torch.from_numpy(value)), key
    assert torch.equal(state["proj_out.weight"], state["model.decoder.embed_tokens.weight"])
    assert model.config.d_model == 384 and model.config.vocab_size == 51864
    assert (model.config.encoder_layers, model.config.decoder_layers) == (4, 4)
    assert model.config.encoder_attention_heads == 6 and model.config.num_mel_bins == 80
    generation = model.generation_config
    assert generation.decoder_start_token_id == 50257
    assert generation.no_timestamps_token_id == 50362
    assert generation.begin_suppress_tokens == [220, 50256]
    assert [3, 4] in generation.alignment_heads and 50257 in generation.suppress_tokens


# CTranslate2's names for a few Hugging Face parameters, written out from the two formats'
# layouts rather than taken from the importer: CT2 fuses self-attention's q, k and v into
# one linear_0 (rows q, then k, then v) and cross-attention's k and v into linear_1.
D = 384  # tiny.en's d_model
HE, HD = "model.encoder.layers.0.", "model.decoder.layers.0."
CE, CD = "encoder/layer_0/", "decoder/layer_0/"
# A fused matrix's first, second and third block of rows.
ROWS_1, ROWS_2, ROWS_3 = slice(0, D), slice(D, 2 * D), slice(2 * D, 3 * D)
CT2_SLICES = {
    "model.encoder.conv1.weight": ("encoder/conv1/weight", None),
    HE + "self_attn.q_proj.weight": (CE + "self_attention/linear_0/weight", ROWS_1),
    HE + "self_attn.k_proj.weight": (CE + "self_attention/linear_0/weight", ROWS_2),
    HE + "self_attn.v_proj.weight": (CE + "self_attention/linear_0/weight", ROWS_3),
    HE + "self_attn.out_proj.weight": (CE + "self_attention/linear_1/weight", None),
    HE + "fc1.weight": (CE + "ffn/linear_0/weight", None),
    HE + "final_layer_norm.weight": (CE + "ffn/layer_norm/gamma", None),
    "model.decoder.embed_tokens.weight": ("decoder/embeddings/weight", None),
    HD + "encoder_attn.q_proj.weight": (CD + "attention/linear_0/weight", None),
    HD + "encoder_attn.k_proj.weight": (CD + "attention/linear_1/weight", ROWS_1),
    HD + "encoder_attn.v_proj.weight": (CD + "attention/linear_1/weight", ROWS_2),
    HD + "self_attn.v_proj.bias": (CD + "self_attention/linear_0/bias", ROWS_3),
}


def test_parameters_sit_where_ct2_stores_them(whisper_tiny_dir):
    from transformers import WhisperForConditionalGeneration

    state = WhisperForConditionalGeneration.from_pretrained(whisper_tiny_dir).state_dict()
    ct2 = parse_model_bin((default_source() / "model.bin").read_bytes())
    for hf_name, (ct2_name, rows) in CT2_SLICES.items():
        raw = ct2.get(ct2_name)
        raw = raw if rows is None else raw[rows]
        got = state[hf_name].numpy()
        assert got.shape == raw.shape, hf_name
        assert np.array_equal(got, raw.astype(got.dtype)), hf_name


@pytest.mark.tts
@pytest.mark.sox
def test_transcribes_clean_speech_and_degrades_on_a_phone_line(whisper_tiny_dir, tmp_path):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(whisper_tiny_dir).eval()
    processor = WhisperProcessor.from_pretrained(whisper_tiny_dir)
    assert processor.tokenizer.convert_tokens_to_ids("<|0.00|>") == 50363
    assert len(processor.tokenizer) == model.config.vocab_size

    clean = speak(SENTENCE, tmp_path / "clean.wav", Voice("flite", "kal16"))
    phone = telephony_channel(
        clean, tmp_path / "phone.wav", ChannelParams(codec="gsm", snr_db=10, seed=1)
    )
    assert sf.info(phone).samplerate == 8000

    clean_text = transcribe(model, processor, clean)
    phone_text = transcribe(model, processor, phone)
    clean_wer, phone_wer = wer(SENTENCE, clean_text), wer(SENTENCE, phone_text)
    print(f"\nclean WER {clean_wer:.1%}: {clean_text!r}")
    print(f"GSM 8 kHz, 10 dB SNR WER {phone_wer:.1%}: {phone_text!r}")
    assert clean_wer <= 0.10
    assert phone_wer >= clean_wer + 0.10


@pytest.mark.tts
def test_a_shrunk_encoder_window_still_hears_clean_speech(tmp_path, whisper_tiny_10s_dir):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    # The session's import (tests/conftest.py), which the benchmark's smoke runs on too.
    model = WhisperForConditionalGeneration.from_pretrained(whisper_tiny_10s_dir)
    processor = WhisperProcessor.from_pretrained(whisper_tiny_10s_dir)
    assert model.config.max_source_positions == 500
    assert processor.feature_extractor.nb_max_frames == 1000
    clean = speak(SENTENCE, tmp_path / "clean.wav", Voice("flite", "kal16"))
    hypothesis = transcribe(model, processor, clean)
    print(f"10 s window, clean WER {wer(SENTENCE, hypothesis):.1%}: {hypothesis!r}")
    assert wer(SENTENCE, hypothesis) <= 0.10
