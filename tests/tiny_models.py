"""Tiny, random, *real* ASR models for tests: built in code, saved with a processor.

Other parts of the suite reuse these builders (``from tests.tiny_models import
build_tiny_whisper``); they exercise the same
``from_pretrained`` loading path as a Hub checkpoint, without any download.

- :func:`build_tiny_whisper` — a ``WhisperForConditionalGeneration`` (d_model 32,
  1+1 layers) with a byte-level BPE tokenizer trained on the given sentences,
  wrapped as ``WhisperTokenizer`` with Whisper's special tokens in Whisper's order
  (so ``<|en|>`` / ``<|transcribe|>`` prefixes work), a ``WhisperFeatureExtractor``
  with a short window (``chunk_seconds``), and a multilingual generation config.
- :func:`build_tiny_qwen2_audio` — a ``Qwen2AudioForConditionalGeneration`` (audio
  encoder and Qwen2 LM of width 32, 1 layer each) with a ``Qwen2Tokenizer`` made
  the same way and a ``Qwen2AudioProcessor``.

Both return the directory they saved to. Dropout is zero so that runs are
deterministic (resume and multi-process equivalence tests rely on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

#: Sentences every tiny tokenizer knows, besides the ones a test passes.
BASE_SENTENCES: tuple[str, ...] = (
    "hello world this is a test",
    "the quick brown fox jumps over the lazy dog",
    "good morning how are you today",
    "please call me back tomorrow",
    "one two three four five six seven eight nine ten",
)

WHISPER_TASK_TOKENS = (
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
)


def _byte_level_bpe(sentences: Sequence[str], vocab_size: int) -> tuple[dict[str, int], list]:
    """Train a byte-level BPE on ``sentences``; return (vocab, merges)."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    corpus = [s for s in sentences] + [s.lower() for s in sentences] + [" " + s for s in sentences]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    state = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return dict(state["vocab"]), merges


def build_tiny_whisper(
    path: str | Path,
    sentences: Sequence[str] = (),
    d_model: int = 32,
    layers: int = 1,
    chunk_seconds: int = 3,
    seed: int = 0,
    heads: int = 2,
    ffn_dim: int | None = None,
) -> Path:
    """Save a tiny random Whisper (model, tokenizer, feature extractor) under ``path``."""
    import torch
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    path = Path(path)
    vocab, merges = _byte_level_bpe([*BASE_SENTENCES, *sentences], vocab_size=400)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    # Whisper derives a language's id as <|startoftranscript|> + 1 + index: add in order.
    specials = [
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        *WHISPER_TASK_TOKENS,
    ]
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.pad_token = "<|endoftext|>"
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ["<|endoftext|>", *specials]}

    window = chunk_seconds * 100  # 10 ms hop: frames per window
    feature_extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=chunk_seconds)
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn_dim or 2 * d_model,
        decoder_ffn_dim=ffn_dim or 2 * d_model,
        max_source_positions=window // 2,
        max_target_positions=64,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    generation = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        max_length=48,
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    model.generation_config = generation
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


QWEN_SPECIALS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
)


def build_tiny_qwen2_audio(
    path: str | Path,
    sentences: Sequence[str] = (),
    d_model: int = 32,
    layers: int = 1,
    chunk_seconds: int = 3,
    seed: int = 0,
) -> Path:
    """Save a tiny random Qwen2-Audio (model, tokenizer, processor) under ``path``."""
    import torch
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        Qwen2Tokenizer,
        WhisperFeatureExtractor,
    )

    path = Path(path)
    vocab, merges = _byte_level_bpe([*BASE_SENTENCES, *sentences], vocab_size=400)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIALS])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ["<|endoftext|>", *QWEN_SPECIALS]}

    window = chunk_seconds * 100
    feature_extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=chunk_seconds)
    processor = Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    config = Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "num_mel_bins": 80,
            "encoder_layers": layers,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 2 * d_model,
            "d_model": d_model,
            "max_source_positions": window // 2,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tokenizer),
            "hidden_size": d_model,
            "intermediate_size": 2 * d_model,
            "num_hidden_layers": layers,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 512,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|endoftext|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": False,
        },
        audio_token_index=ids["<|AUDIO|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        max_new_tokens=32,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


#: Short sentences the trainer tests speak and overfit.
TEST_SENTENCES: tuple[str, ...] = (
    "hello world",
    "good morning",
    "call me back",
    "one two three",
)


def write_speech_manifest(
    folder: str | Path, sentences: Sequence[str] = TEST_SENTENCES, name: str = "speech.jsonl"
) -> Path:
    """Speak ``sentences`` with flite (16 kHz WAVs) and write a manifest next to them."""
    import soundfile as sf

    from marco_contract.formats import Utterance
    from marco_contract.manifests import write_manifest
    from marco_demo.synth import speak

    folder = Path(folder)
    utterances = []
    for i, text in enumerate(sentences):
        path = speak(text, folder / f"utt{i:02d}.wav")
        utterances.append(
            Utterance(audio_filepath=str(path), text=text, duration=sf.info(path).duration)
        )
    manifest = folder / name
    write_manifest(manifest, utterances)
    return manifest
