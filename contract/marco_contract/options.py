"""The stage options the spec sets and the trainer takes: one source for each default.

Each model here is a section (or part of one) of the AsrAdaptation spec and the
flags of a trainer subcommand at once: the API's spec classes extend them with
what only the operator reads (`enabled`, shards, the LR bounds...), the plan
writes them as flags with `marco_contract.argv.to_argv`, and the trainer's CLIs
build their parsers from them (extended with trainer-only knobs). A default,
bound or description therefore exists once, here, and reaches the CRD, the
command line and ``--help`` alike.

Changing a default here changes the API: the CRD is generated from these
models (`marco crd`), and the defaults are the API's documented ones.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from marco_contract.memory import Strategy
from marco_contract.status import ApiModel

# Upper bounds. Every number of the spec has one, so that a slip of the keyboard
# (maxSteps: 1000000000000) is refused at admission instead of running for ever or
# exhausting memory; each bound sits far above any real run, and the API's schema
# (the CRD's `maximum`) carries it too.

#: Most optimizer steps of any step count (maxSteps, cycleSteps, evalEvery, warmupSteps):
#: a million steps is weeks of GPU time at a second a step; the default run is 5000.
MAX_STEPS = 1_000_000
#: Most utterances one measurement decodes (a validation pass, the baseline, the test
#: set): a million utterances is well over a thousand hours of audio.
MAX_SAMPLES = 1_000_000
#: Seeds go to random.seed, numpy's legacy np.random.seed (which refuses 2**32 and above)
#: and torch.manual_seed.
MAX_SEED = 2**32 - 1
#: Longest utterance, in seconds, any duration bound may name (an hour; Whisper's window
#: is 30 s).
MAX_DURATION_SECONDS = 3600.0
#: Most tokens a decoding bound may allow (Whisper's decoder holds 448 positions).
MAX_TOKENS = 4096

#: The trainer's --family: a spec family, or "auto" (detected from the model's config).
TrainerFamily = Literal["auto", "encoder-decoder", "llm"]


class StageOptions(ApiModel):
    """camelCase in the spec, snake_case in Python, --kebab-case on the command line."""


class LanguageOptions(StageOptions):
    """How the model decodes: `model` in the spec; --task/--language of train and evaluate."""

    task: Literal["transcribe", "translate"] = Field(
        default="transcribe", description="Decoder task."
    )
    language: str | None = Field(default="en", description="Language code of the target audio.")


class LoraOptions(StageOptions):
    """LoRA adapters (llm family): `model.lora`; --lora-* of train."""

    r: int = Field(default=16, ge=1, le=1024, description="Adapter rank.")
    # alpha/r scales the adapter's output: a few times the largest rank is plenty.
    alpha: int = Field(default=32, ge=1, le=4096, description="Adapter scaling numerator.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    # All four attention projections: the API's documented default since v1alpha1 (the
    # trainer's own q,v-only default had drifted from it and is gone).
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        max_length=64,  # module names, not modules: a model has a handful of projection kinds
        description="Module names that get adapters.",
    )


class FilterOptions(StageOptions):
    """Data filter bounds: `filter` in the spec; flags of the filter subcommand."""

    min_duration: float = Field(default=0.3, ge=0, le=MAX_DURATION_SECONDS, description="Seconds.")
    max_duration: float = Field(
        default=30.0, gt=0, le=MAX_DURATION_SECONDS, description="Seconds (Whisper's window)."
    )
    # 30, the API's documented default (the trainer had drifted to 35 when run by hand).
    # Alphanumeric characters per second: fast read speech stays under ~20.
    # 1000: no speech comes near it; a bound that high filters nothing.
    max_chars_per_second: float = Field(
        default=30.0,
        gt=0,
        le=1000,
        description="Transcript characters (letters and digits) per second of audio above "
        "which a line is rejected as misaligned.",
    )


class AugmentOptions(StageOptions):
    """Augmentation draws: part of `augmentation` in the spec; flags of augment."""

    copies: int = Field(default=1, ge=1, le=100, description="Augmented copies per utterance.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of every per-utterance draw.")
    # Rooms cost little (a 1 s room is simulated in about 30 ms) but each copy draws one of
    # them: few rooms are few acoustic conditions for the model to learn, where a target's
    # talkers stand anywhere in many rooms.
    rooms: int = Field(
        default=8,
        ge=0,
        le=4096,
        description="Simulated rooms (shoebox, image sources; RT60 from the profile with "
        "channelFromTarget) the reverberation step draws one from per copy; 0: no simulated "
        "rooms. Unused with rirPath.",
    )
    # Off until benchmarks/adaptation.py shows it helps on scenarios it was not tuned on:
    # on, the demo's own target (a GSM/μ-law phone line) gets a different chain.
    channel_from_target: bool = Field(
        default=False,
        description="Apply what the profile measured of the target's channel: band, codec, "
        "equaliser, harvested noise (else noise of its noise floor's spectrum), compression, "
        "rooms (p_rev and RT60 from its reverberation) and lost packets; and noise mixed at "
        "the SNR the profile's estimator reads back as the drawn one (a line fitted on the "
        "chain itself). Off: the paper's Eq. 3 steps only.",
    )
    # Off until benchmarks/adaptation.py shows it helps: on, every draw of the demo's chain
    # stays the same (the factor is drawn last) but its audio does not.
    speed_factors: list[Annotated[float, Field(ge=0.5, le=2.0)]] | None = Field(
        default=None,
        max_length=10,
        description="Speed perturbation (Ko et al. 2015, who use 0.9, 1.0, 1.1): each "
        "augmented copy is first played this many times faster, one factor drawn per copy, "
        "so tempo and pitch move together as another talker's would. It acts on the voice, "
        "not the channel, and comes before Eq. 3's steps; profile preset only. Unset or "
        "empty: off.",
    )
    # Off by default: measured on the meeting scenario, whose target has distant talkers
    # (docs/method.md, "competing talkers"); a target without them would get talkers in
    # its copies that its test audio never has.
    babble_talkers: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Competing talkers: the noise step mixes a bank of this many source "
        "speakers at once (each at equal power, from the training manifests' `speaker` "
        "key; a line without one counts as its own talker) at the SNR drawn from the "
        "profile, in place of the harvested noise. For targets with other people talking "
        "behind the transcribed one (meetings, call-centre floors). 0: off. Profile "
        "preset only, and not with noisePath.",
    )


class VolumeOptions(StageOptions):
    """Where a stage may read: the volumes as its process sees them; flags of every stage
    that reads manifests or audio (filter, profile, augment, evaluate, train).

    Not a section of the spec: the plan derives both from it through the `Layout`
    (data.mountPath in a pod, `--data-dir` under `marco run`; the adaptation's output
    directory) and always passes them. A stage run by hand without them reads what it
    is given, unconfined."""

    data_root: str | None = Field(
        default=None,
        description="The data volume (data.mountPath as this process sees it): the manifests "
        "and audio a stage reads must resolve inside it, symlinks followed; a manifest line "
        "naming audio outside is skipped and counted (outside_volume). Unset: not confined.",
    )
    output_root: str | None = Field(
        default=None,
        description="This adaptation's output directory: the manifests the stages wrote there "
        "(kept lines, augmented copies) may name audio inside it as well as on the data volume.",
    )


class EvaluateOptions(StageOptions):
    """How much of a manifest is scored: `evaluation` in the spec (`baseline.samples`
    for the baseline run); --max-samples of evaluate."""

    max_samples: int | None = Field(
        default=None, ge=1, le=MAX_SAMPLES, description="Test utterances; all when unset."
    )


class TrainingOptions(StageOptions):
    """The loop's budget and batch: part of `training` in the spec; flags of train."""

    # 5000, the API's documented default (the trainer CLI's 1000 had drifted from it).
    max_steps: int = Field(default=5000, ge=1, le=MAX_STEPS, description="Optimizer steps at most.")
    eval_every: int = Field(
        default=50, ge=1, le=MAX_STEPS, description="Steps between validation WERs."
    )
    # Every evalEvery steps: 100k utterances per evaluation is already hours of decoding.
    eval_samples: int = Field(
        default=200, ge=1, le=100_000, description="Validation utterances per eval."
    )
    # 1024 utterances of audio on one device is far past any GPU's memory.
    per_device_batch_size: int = Field(
        default=4, ge=1, le=1024, description="Utterances per device."
    )
    gradient_accumulation: int = Field(
        default=8, ge=1, le=1024, description="Micro-batches per optimizer step."
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="auto: bf16 where the GPU supports it, else fp32."
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in the backward pass (less memory)."
    )
    # The memory estimate (marco_contract.memory) divides by the ranks under fsdp.
    strategy: Strategy = Field(
        default="ddp",
        description="How ranks hold the model. ddp: each rank a whole copy (weights, gradients, "
        "optimizer moments), gradients all-reduced. fsdp: FSDP2, those sharded over the ranks "
        "and each transformer layer's weights gathered for its compute, for a model whose "
        "training state does not fit one GPU (with one rank: ddp).",
    )
    # 0, the trainer's own default before the spec carried it: the demo's runs are unchanged.
    seed: int = Field(
        default=0,
        ge=0,
        le=MAX_SEED,
        description="Seed of the training run: initialisation of new parameters, data order, "
        "dropout. Two runs with the same seed and spec give the same losses.",
    )

    # The cycle length lives here, not only in the API, because the trainer needs it
    # too: it waits at a cycle's boundary for the next directive (`wait_for_directive`).
    cycle_steps: int = Field(
        default=250, ge=1, le=MAX_STEPS, description="Optimizer steps per LR cycle."
    )
    wait_for_directive: bool = Field(
        default=True,
        description="At a cycle's boundary (its last windowed evaluation) the trainer waits "
        "for the next cycle's directive, so every cycle starts at the same step in every run "
        "(same manifest, same seed: the same LR sequence); false: a directive takes effect at "
        "the step it is read.",
    )
    # An hour: the other ranks wait in a collective meanwhile (NCCL's own timeout is 10 min).
    directive_timeout_seconds: float = Field(
        default=300.0,
        ge=0,
        le=3600,
        description="Longest wait for the next cycle's directive; then training goes on at the "
        "old LR and takes the directive when it comes (keep below the process group's "
        "collective timeout, 10 min with NCCL, as the other ranks wait in a broadcast).",
    )


def evals_per_cycle(cycle_steps: int, eval_every: int) -> int:
    """The evaluations that close a cycle: the operator's σ window, the trainer's wait point."""
    return max(1, cycle_steps // eval_every)


class SpecAugmentOptions(StageOptions):
    """SpecAugment on the encoder's input features while training (Whisper-style models):
    `training.specAugment` in the spec; --spec-augment-* of train.

    The fields are the Hugging Face Whisper config's own (`apply_spec_augment`,
    `mask_time_*`, `mask_feature_*`), with its defaults, so that a value means what the
    transformers documentation says. Masks are drawn only in training mode: validation,
    the baseline and the export's decoding never see them.
    """

    enabled: bool = Field(
        default=False, description="Mask spans of time frames and mel bins while training."
    )
    mask_time_prob: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of frames masked (an upper bound: spans may overlap); "
        "spans = maskTimeProb × frames / maskTimeLength.",
    )
    # 3000 frames: Whisper's whole 30 s window.
    mask_time_length: int = Field(
        default=10, ge=1, le=3000, description="Frames per time mask (10 ms)."
    )
    mask_time_min_masks: int = Field(
        default=2, ge=0, le=100, description="Time masks per utterance at least."
    )
    mask_feature_prob: float = Field(
        default=0.0, ge=0, le=1, description="Share of mel bins masked (0 = no frequency masks)."
    )
    # Whisper has 80 or 128 mel bins; 1024 leaves room for any feature extractor.
    mask_feature_length: int = Field(
        default=10, ge=1, le=1024, description="Mel bins per frequency mask."
    )
    mask_feature_min_masks: int = Field(
        default=0, ge=0, le=100, description="Frequency masks per utterance at least."
    )


class FreezeOptions(StageOptions):
    """Parameters kept at the pretrained values (encoder-decoder family): `training.freeze`
    in the spec; --freeze-* of train."""

    encoder: bool = Field(default=False, description="Freeze the whole audio encoder.")
    # The deepest speech encoders have a few dozen layers.
    encoder_layers: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="Freeze the encoder's input stem (convolutions, positions) and its first "
        "encoderLayers transformer layers (0 = none; ignored when encoder is true).",
    )


class RetentionOptions(StageOptions):
    """What keeps the model from forgetting while it adapts: part of `training` in the spec;
    flags of train. Every default is neutral (the loop as without these fields); see
    docs/method.md, "Keeping what the model knew", for what was measured."""

    warmup_steps: int = Field(
        default=0,
        ge=0,
        le=MAX_STEPS,
        description="Steps at the start of every LR cycle over which the LR rises linearly "
        "from warmupStartFactor × the cycle's LR to it (0 = no warm-up).",
    )
    warmup_start_factor: float = Field(
        default=0.1, gt=0, le=1, description="The warm-up's first LR, as a share of the cycle's."
    )
    spec_augment: SpecAugmentOptions = Field(default_factory=SpecAugmentOptions)
    freeze: FreezeOptions = Field(default_factory=FreezeOptions)
    clean_source_share: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of each batch drawn from the clean source (the rest from the "
        "augmented copies), with augmentation and keepOriginal; unset: the two are simply "
        "concatenated (with 1 copy, about half clean).",
    )
    # 50: past a few dozen the mean reaches back to the first evaluations, and each kept
    # checkpoint is a copy of the weights on the volume.
    average_checkpoints: int = Field(
        default=1,
        ge=1,
        le=50,
        description="Export the mean of the weights of this many evaluated checkpoints, those "
        "with the lowest validation WER, scored on the validation subset once more (1 = the "
        "single best checkpoint); the single best is exported instead when the mean reads "
        "worse than it on the same validation utterances. Each of them is "
        "kept on the volume until the end.",
    )


class DecodingOptions(StageOptions):
    """How every stage that decodes (baseline, the validation WER of train, evaluate) turns
    audio into text: `decoding` in the spec; flags of train and evaluate.

    One policy for all three, so that WER0, the cycle WERs that steer Eq. 1 and the final
    WER measure the same thing. The guards exist because a fine-tuned model can fall into
    a loop and emit one phrase until the token limit: one such hypothesis adds dozens of
    insertions, and on a small dev set moves the WER by points (docs/method.md, "Decoding
    that cannot run away"). A guard is off at 0 rather than null: a null is not written on
    the command line, and the trainer would then read the default instead.
    """

    max_new_tokens: int = Field(
        default=128,
        ge=1,
        le=MAX_TOKENS,
        description="Tokens per hypothesis at most, whatever the audio's length.",
    )
    # Fast read speech is 3-4 words/s, 5-6 Whisper tokens/s with punctuation; 8 leaves room
    # for digits and names, which take more tokens per word. Measured on the demo's 500
    # target references: 3.4 tokens/s on average, 4.7 at most (docs/method.md). On by
    # default: on the demo data it changed no hypothesis but runaways.
    tokens_per_second: float = Field(
        default=8.0,
        ge=0,
        le=1000,  # speech is under 10 tokens/s; a higher bound bounds nothing
        description="Length bound per second of audio: a hypothesis gets at most "
        "ceil(tokensPerSecond x duration) + extraTokens tokens (and maxNewTokens); 0: no bound "
        "from the duration.",
    )
    extra_tokens: int = Field(
        default=10,
        ge=0,
        le=MAX_TOKENS,
        description="Tokens the length bound allows on top of tokensPerSecond x duration "
        "(a short clip can still hold a long word, and punctuation).",
    )
    # 3: runs of 3 copies occur in speech (digits: "five five five"; 12 of the demo's 500
    # references), runs of 4 did not.
    max_repeats: int = Field(
        default=3,
        ge=0,
        le=MAX_TOKENS,  # a run longer than the hypothesis itself cuts nothing
        description="A run of more than this many consecutive copies of one token sequence "
        "is a decoder loop and is cut to one copy; 0: no cut.",
    )
    # Whisper's own schedule after greedy (OpenAI's transcribe, transformers' docs).
    # Each temperature decodes the failing hypotheses once more: 20 at most, each at most 10
    # (past ~1.5 sampling is noise already).
    temperature_fallback: list[Annotated[float, Field(le=10)]] = Field(
        default_factory=lambda: [0.2, 0.4, 0.6, 0.8, 1.0],
        max_length=20,
        description="Temperatures tried in turn after greedy decoding for the hypotheses that "
        "fail compressionRatioThreshold or logprobThreshold (Whisper's fallback, encoder-decoder "
        "family only; sampling uses a fixed seed); empty: greedy only.",
    )
    compression_ratio_threshold: float = Field(
        default=1.35,
        ge=0,
        le=100,  # zlib compresses a long run of one token ~100-fold at best
        description="Fallback when a hypothesis's tokens compress (zlib) by more than this "
        "(transformers' token-level ratio: repetitive output compresses well); 0: not used.",
    )
    # Unset by default: on noisy phone audio a low mean log-probability is common and says
    # nothing about a loop; resampling those would make the WER depend on sampling.
    # A mean log-probability is at most 0; -1000 is below any real hypothesis's.
    logprob_threshold: float | None = Field(
        default=None,
        ge=-1000,
        le=0,
        description="Fallback when a hypothesis's mean token log-probability is below this; "
        "unset: not used.",
    )

    @model_validator(mode="after")
    def _fallback_has_a_trigger(self) -> DecodingOptions:
        if any(t <= 0 for t in self.temperature_fallback):
            raise ValueError("temperatureFallback: temperatures must be above 0")
        if self.temperature_fallback and not (
            self.compression_ratio_threshold or self.logprob_threshold is not None
        ):
            raise ValueError(
                "temperatureFallback needs compressionRatioThreshold or logprobThreshold"
            )
        return self
