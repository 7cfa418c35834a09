"""The training loop, read top to bottom like the method (paper §1, §2, §4).

Per optimizer step: rank 0 polls the directive file and broadcasts it (a new
cycle's LR takes effect at this step on every rank; ``stop`` ends the run; at a
cycle's boundary rank 0 first waits for the next cycle's directive);
each rank runs its ``gradient_accumulation`` micro-batches (DDP syncs on the
last); a non-finite loss or gradient skips the step everywhere (repeated ones
roll back to the best checkpoint); AdamW (β = 0.9, 0.995) steps. Every
``eval_every`` steps the validation subset is transcribed (sharded over ranks),
WER recorded with the cycle and LR in force, the best checkpoint kept and the
``last`` checkpoint written for resuming. At the end the best checkpoint is
exported.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import signal
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from marco_contract.files import atomic_write_text
from marco_contract.formats import Directive, Evaluation, EvaluationHistory, StageResult
from marco_contract.layout import BEST_CHECKPOINT, CHECKPOINTS_DIR, EVALUATIONS_FILE, EXPORT_DIR
from marco_contract.manifests import OUTSIDE_VOLUME, Volumes
from marco_contract.options import evals_per_cycle
from marco_contract.scoring import wer_change_standard_error, wer_standard_error
from marco_trainer.data import (
    CleanMix,
    LoadedBatch,
    MicroBatchStream,
    StreamPosition,
    load_batch,
    load_examples,
)
from marco_trainer.evaluate import score, transcribe_examples
from marco_trainer.models import load_asr_model
from marco_trainer.models.base import IGNORE_INDEX
from marco_trainer.remote import model_name
from marco_trainer.text import is_character_language
from marco_trainer.train.averaging import (
    AVERAGED_CHECKPOINT,
    AVERAGED_FILE,
    AveragedInfo,
    average_is_kept,
    average_weights,
    kept_dir,
    kept_on_disk,
    kept_steps,
)
from marco_trainer.train.checkpoint import (
    BEST_FILE,
    BestInfo,
    CheckpointError,
    TrainerState,
    existing_dir,
    load_last,
    quarantine,
    replace_dir,
    resume_candidates,
    rng_state,
    save_best,
    save_last,
    set_rng_state,
)
from marco_trainer.train.directive import DirectiveWatcher, differs, is_next
from marco_trainer.train.distributed import Distributed
from marco_trainer.train.feature_cache import (
    FeatureCache,
    auto_budget,
    container_memory_limit,
)
from marco_trainer.train.options import TrainOptions
from marco_trainer.train.retention import freeze_encoder, warmup_factor

if TYPE_CHECKING:
    from torch.nn.parallel import DistributedDataParallel

    from marco_trainer.endpoint_server import EndpointServer
    from marco_trainer.metrics import TrainerMetrics

log = logging.getLogger(__name__)

#: Exit status after SIGTERM (a suspended Job): state saved, not finished.
EXIT_TERMINATED = 143


def gpu_memory(device: torch.device) -> tuple[int, int] | None:
    """(allocated, peak allocated) bytes on a CUDA device; None elsewhere, where the
    GPU memory series stay absent rather than read 0."""
    if device.type != "cuda":
        return None
    return torch.cuda.memory_allocated(device), torch.cuda.max_memory_allocated(device)


def peak_host_memory() -> int:
    """This process's peak resident memory in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class PreparedStep:
    """One rank's micro-batches for a step, loaded and collated (in the prefetch thread)."""

    batches: list[dict[str, torch.Tensor] | None]
    loaded: list[LoadedBatch]
    position: StreamPosition


@dataclass(frozen=True)
class Validation:
    """One decoding of the validation subset: corpus WER and CER, the WER's standard error,
    and each utterance's word errors (by its index) and reference words."""

    wer: float
    cer: float
    wer_se: float | None
    errors: dict[int, int]
    words: list[int]

    def change_se(self, previous: Validation | None) -> float | None:
        """The standard error of the WER's change since ``previous``; None without one, or
        when the two read other utterances (one was unreadable in only one of them)."""
        if previous is None or previous.errors.keys() != self.errors.keys():
            return None
        return wer_change_standard_error(
            [previous.errors[i] for i in self.errors], list(self.errors.values()), self.words
        )


class Trainer:
    def __init__(self, opts: TrainOptions) -> None:
        self.opts = opts
        self.dist = Distributed.from_env()
        #: Served from the start: an empty history until _resume replaces it.
        self.state = TrainerState(learning_rate=opts.learning_rate)
        self.finished = False
        self.metrics: TrainerMetrics | None = None
        self.servers: list[EndpointServer] = []
        if self.dist.is_main:
            # Before the model loads (minutes for a large one from a network volume): the
            # operator reads rank 0 as soon as its pod runs, and a port that refuses it for
            # longer than the operator's start-up allowance counts as a `trainer` error.
            self._serve()
        try:
            self._build()
        except BaseException:
            self.close()  # run_training's finally has no trainer to close
            raise

    def _serve(self) -> None:
        from marco_trainer.metrics import TrainerMetrics
        from marco_trainer.metrics_server import read_token, start_endpoints

        opts = self.opts
        self.metrics = TrainerMetrics(opts.adaptation or "")
        self.servers = start_endpoints(
            self.metrics,
            self.history,
            host=opts.metrics_host,
            metrics_port=opts.metrics_port,
            api_port=opts.api_port,
            token=read_token(opts.api_token_file),
        )

    def _stop_servers(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers = []

    def _build(self) -> None:
        """Everything but the endpoints: the model, the data, the optimizer, the resume."""
        opts = self.opts
        self.out = Path(opts.output_dir)
        self.checkpoints = self.out / CHECKPOINTS_DIR
        # Only an exported run averages: a trial (--no-export) wants its curve alone.
        self.averaging = opts.export and opts.average_checkpoints > 1
        self.counts: Counter = Counter()
        #: The previous evaluation's scores, for the standard error of the change to the
        #: next (Evaluation.wer_change_se); None before the first of this process.
        self._previous_validation: Validation | None = None
        #: The best evaluation's scores, which the checkpoint average is compared with
        #: (averaging.average_is_kept); None until this process records a best.
        self._best_validation: Validation | None = None
        self._terminate = False  # this rank got SIGTERM
        # Some rank had, as of the last step's all-reduce: the same on every rank, so all save
        # (a collective under FSDP) and exit at the same step.
        self._terminating = False
        self._polled_at = self._polled_until = 0.0  # when this step read the directive
        # Loading and featurising the next step's audio while a GPU computes hides the data
        # time. On a CPU the step's compute already runs on every core, and the thread only
        # competes with it (benchmarks/train.py: 3 % fewer samples/s), so by default it is off.
        self.prefetch = (
            opts.prefetch if opts.prefetch is not None else self.dist.device.type == "cuda"
        )
        self._seed(opts.seed)

        if opts.strategy == "fsdp" and not self.dist.active:
            log.warning("--strategy fsdp with one rank: nothing to shard over, training as ddp")
        sharded = opts.strategy == "fsdp" and self.dist.active
        family: str = opts.family  # "auto" becomes the detected family below
        lora = None
        if not opts.full_finetune:
            from marco_trainer.models.loading import family_from_config

            family = family_from_config(opts.model) if family == "auto" else family
            if family == "llm":
                lora = opts.lora
        self.asr = load_asr_model(
            opts.model,
            family=family,
            language=opts.language,
            task=opts.task,
            lora=lora,
            trainable=True,
            gradient_checkpointing=opts.gradient_checkpointing,
            # Sharded, only rank 0 reads the weights; the others receive them (_shard).
            weights=not sharded or self.dist.is_main,
        )
        self._retain(family)
        if sharded:
            self._shard()
        else:
            self.asr.to(self.dist.device)
        # The adapters' initial values, for a rollback with no best checkpoint.
        self._initial_adapter = self._adapter_snapshot()
        log.info(
            "rank %d: model ready (%s), peak host memory so far %.0f MiB",
            self.dist.rank,
            "sharded" if self.asr.sharded else "whole",
            peak_host_memory() / 2**20,
        )
        if self._use_bf16():
            self.asr.autocast_dtype = torch.bfloat16

        self.volumes = Volumes.of(opts.data_root, opts.output_root)
        self.train_examples = load_examples(opts.train_manifests, self.counts, volumes=self.volumes)
        mix = self._mix_clean_source()
        validation: Counter = Counter()
        self.val_examples = load_examples(
            [opts.validation_manifest], validation, limit=opts.eval_samples, volumes=self.volumes
        )
        if validation[OUTSIDE_VOLUME]:
            self.counts[f"validation_{OUTSIDE_VOLUME}"] = validation[OUTSIDE_VOLUME]
        if not self.train_examples:
            raise ValueError(f"--train-manifest {opts.train_manifests}: no usable utterances")
        if not self.val_examples:
            raise ValueError(f"--validation-manifest {opts.validation_manifest}: no utterances")
        filler = self._find_filler()
        self.filler_batch = self.asr.training_batch(filler.audios, filler.texts)
        # Only families whose per-utterance inputs stand alone can reuse them.
        reusable = bool(self.asr.example_inputs(self.filler_batch))
        budget = (
            auto_budget(container_memory_limit(), self.dist.local_world_size)
            if opts.feature_cache_mb is None
            else opts.feature_cache_mb * 2**20
        )
        self.feature_cache = FeatureCache(budget if reusable else 0)

        self.optimizer = torch.optim.AdamW(
            self.asr.trainable_parameters(),
            lr=opts.learning_rate,
            betas=(0.9, 0.995),
            weight_decay=opts.weight_decay,
            # One kernel for all parameters instead of a loop of small ops (CPU and CUDA).
            fused=self.dist.device.type in ("cpu", "cuda"),
        )
        self._resume()
        self._set_lr(self.state.learning_rate)

        self.stream = MicroBatchStream(
            [e.duration for e in self.train_examples], opts.per_device_batch_size, opts.seed, mix
        )
        self.stream.seek(StreamPosition(self.state.epoch, self.state.offset))

        self.module: torch.nn.Module = self.asr.model
        if self.dist.active and not self.asr.sharded:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            self.module = DistributedDataParallel(self.asr.model, device_ids=ids)

        self.watcher = DirectiveWatcher(opts.control_file if self.dist.is_main else None)
        self._gave_up_cycle: int | None = None  # the cycle whose boundary wait timed out
        if self.metrics is not None:
            self.metrics.observe_directive(self.state.learning_rate, self.state.cycle)
            self.metrics.observe_position(self.state.step)
            if opts.baseline_wer is not None:
                self.metrics.observe_baseline(opts.baseline_wer)
        trace_dir = self.out / "trace"
        trace_dir.mkdir(parents=True, exist_ok=True)
        self._trace = (trace_dir / f"rank-{self.dist.rank}.jsonl").open("a", buffering=1)

    # -- setup helpers ---------------------------------------------------------------
    def _seed(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _retain(self, family: str) -> None:
        """SpecAugment and partial freezing (options in `RetentionOptions`), before the
        optimizer is built: it takes the parameters still trainable."""
        opts = self.opts
        set_spec_augment = getattr(self.asr, "set_spec_augment", None)
        if callable(set_spec_augment):
            set_spec_augment(opts.spec_augment)
        elif opts.spec_augment.enabled:
            raise ValueError(f"--spec-augment-enabled: the {family} family has no SpecAugment")
        if opts.freeze.encoder or opts.freeze.encoder_layers:
            if self.asr.family != "encoder-decoder":
                raise ValueError(
                    f"--freeze-encoder/--freeze-encoder-layers: the {self.asr.family} family "
                    "trains LoRA adapters or everything; freezing is for encoder-decoder"
                )
            frozen = freeze_encoder(self.asr.model, opts.freeze)
            trainable, total = self.asr.parameter_counts()
            log.info("frozen %d parameters: %d of %d train", frozen, trainable, total)

    def _shard(self) -> None:
        """FSDP2 over the ranks (`train.fsdp`), before the optimizer is built: it must hold
        the sharded parameters. The weights go to the device unit by unit as they shard."""
        from marco_trainer.train import fsdp

        # Rank 0's whole weights, referenced before sharding replaces the parameters.
        whole = fsdp.whole_weights(self.asr.model) if self.dist.is_main else None
        fsdp.agree_trainable(self.asr.model)
        count = fsdp.shard(
            self.asr.model, self.dist.device, self.dist.world_size, bf16=self._use_bf16()
        )
        fsdp.broadcast_weights(self.asr.model, self.dist.device, whole)
        del whole
        self.asr.device = self.dist.device
        self.asr.sharded = True
        log.info(
            "fsdp: rank %d: %d layers sharded over %d ranks; %s",
            self.dist.rank,
            count,
            self.dist.world_size,
            "weights read from disk" if self.dist.is_main else "no weights read, rank 0's received",
        )

    def _gathered(self) -> AbstractContextManager[None]:
        """The whole model on each rank for decoding (`train.fsdp.gathered`)."""
        if not self.asr.sharded:
            return nullcontext()
        from marco_trainer.train import fsdp

        return fsdp.gathered(self.asr.model)

    def _checkpoint_state(self) -> tuple[dict[str, torch.Tensor] | None, dict, list[dict]]:
        """(weights, optimizer state, every rank's RNG states) for rank 0 to write. Every
        rank calls it (collectives): a sharded model's weights and moments are gathered
        whole; a replicated one's weights are the live model's (None) and its optimizer
        state rank 0's own."""
        rng_states = self.dist.all_gather_object(rng_state())
        if not self.asr.sharded:
            return None, self.optimizer.state_dict() if self.dist.is_main else {}, rng_states
        from marco_trainer.train import fsdp

        weights = fsdp.gather_weights(self.asr.model)
        return weights, fsdp.gather_optimizer(self.asr.model, self.optimizer), rng_states

    def _save_last(self) -> None:
        """``last`` from the state now; every rank calls it, rank 0 writes."""
        weights, optimizer_state, rng_states = self._checkpoint_state()
        if self.dist.is_main:
            save_last(
                self.checkpoints / "last", self.asr, optimizer_state, self.state, weights,
                rng_states,
            )  # fmt: skip

    def _mix_clean_source(self) -> CleanMix | None:
        """Appends the clean source to the training examples; the share it is drawn at."""
        opts = self.opts
        if opts.clean_source_share is None:
            return None
        clean = load_examples(opts.clean_manifests, self.counts, volumes=self.volumes)
        if not clean:
            raise ValueError(f"--clean-manifest {opts.clean_manifests}: no usable utterances")
        mix = CleanMix(first_clean=len(self.train_examples), share=opts.clean_source_share)
        self.counts["clean_utterances"] = len(clean)
        self.train_examples = self.train_examples + clean
        return mix

    def _use_bf16(self) -> bool:
        if self.opts.precision == "fp32":
            return False
        if self.opts.precision == "bf16":
            return True
        return self.dist.device.type == "cuda" and torch.cuda.is_bf16_supported()

    def _adapter_snapshot(self) -> dict | None:
        if not self.asr.is_adapter:
            return None
        if self.asr.sharded:  # this rank's shards, put back in place (no collective)
            model = self.asr.model
            return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.asr.model).items()}

    def _find_filler(self) -> LoadedBatch:
        """One readable utterance, run with zero weight when a rank's micro-batch is unreadable.

        DDP needs every rank in every backward; a rank whose files all fail to
        read still takes part, contributing nothing.
        """
        for index in range(len(self.train_examples)):
            batch = load_batch(self.train_examples, [index], self.asr.sampling_rate)
            if batch.audios:
                return batch
        raise ValueError("no training audio file can be read")

    def _resume(self) -> None:
        """From ``last``; one that cannot be read back is moved aside (never deleted) and the
        previous ``last`` tried; when none loads, the stage trains again from step 0.

        ``best`` is no resume point: it holds weights only (no optimizer moments, RNG or
        data position), and resuming from it would measure again, with other WERs, steps whose
        evaluations the operator has already read.
        """
        fresh_rng = rng_state()  # the RNG as a run from step 0 has it here
        moved: list[Path] = []
        for source in resume_candidates(self.checkpoints / "last"):
            error: CheckpointError | None = None
            try:
                state = load_last(source, self.asr, self.optimizer, self.dist.rank)
            except CheckpointError as failed:
                error = failed
            # Every rank reads the same folder: all resume from it or none does.
            if not self.dist.all_sum([float(error is not None)])[0]:
                state.corrupt_checkpoints += len(moved)
                self.state = state
                log.info("resumed from %s at step %d", source, state.step)
                return
            self.dist.barrier()  # no rank reads it any more
            target = quarantine(source) if self.dist.is_main else source
            moved.append(target)
            log.warning(
                "%s; moved it to %s",
                error or f"cannot resume from {source}: another rank cannot read it",
                target,
            )
            self.dist.barrier()
        if not moved:
            return
        # Nothing loaded: the weights, moments and RNG a failed load may have set go back
        # to a fresh run's; the last run's best and history, no longer this run's, are kept.
        self._restore_initial_weights()
        self.optimizer.state.clear()
        set_rng_state(fresh_rng)
        self.state.corrupt_checkpoints = len(moved)
        if self.dist.is_main:
            stamp = moved[0].name.rpartition(".corrupt-")[2]
            for old in (self.checkpoints / BEST_CHECKPOINT, self.out / EVALUATIONS_FILE):
                if old.exists():
                    aside = old.with_name(f"{old.name}.before-{stamp}")
                    old.rename(aside)
                    log.warning("moved %s to %s", old, aside)
        self.dist.barrier()
        log.warning("no checkpoint to resume from: training this stage again from step 0")

    def _restore_initial_weights(self) -> None:
        if self._initial_adapter is not None and self.asr.sharded:
            with torch.no_grad():
                for name, param in self.asr.model.named_parameters():
                    if name in self._initial_adapter:
                        param.copy_(self._initial_adapter[name])
        elif self._initial_adapter is not None:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.asr.model, self._initial_adapter)
        else:
            self.asr.load_weights(_local_model_dir(self.opts.model))

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # -- the contract's views ----------------------------------------------------------
    def history(self) -> EvaluationHistory:
        return EvaluationHistory(
            adaptation=self.opts.adaptation,
            evaluations=list(self.state.evaluations),
            directive=self.state.directive,
            finished=self.finished,
        )

    # -- one step ---------------------------------------------------------------------
    def _prepare(self) -> PreparedStep:
        world, accum, rank = self.dist.world_size, self.opts.gradient_accumulation, self.dist.rank
        micro = self.stream.take(world * accum)[rank * accum : (rank + 1) * accum]
        position = StreamPosition(self.stream.position.epoch, self.stream.position.offset)
        batches: list[dict[str, torch.Tensor] | None] = []
        loaded: list[LoadedBatch] = []
        for indices in micro:
            reused = self.feature_cache.get_all(list(indices))
            if reused is not None:
                texts = [self.train_examples[i].text for i in indices]
                loaded.append(LoadedBatch([], texts, [], list(indices)))
                batches.append(self._pinned(self.asr.batch_from_inputs(reused, texts)))
                continue
            batch = load_batch(self.train_examples, indices, self.asr.sampling_rate)
            loaded.append(batch)
            tensors = self.asr.training_batch(batch.audios, batch.texts) if batch.audios else None
            if tensors is not None and self.feature_cache.max_bytes:
                # On only for families with per-example inputs (checked at start-up).
                examples = self.asr.example_inputs(tensors)
                for index, inputs in zip(batch.indices, examples, strict=True):
                    self.feature_cache.put(index, inputs)
            batches.append(self._pinned(tensors))
        return PreparedStep(batches, loaded, position)

    def _pinned(self, tensors: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        if tensors is not None and self.dist.device.type == "cuda":
            # Page-locked, so the copy to the GPU runs asynchronously (non_blocking).
            tensors = {k: v.pin_memory() for k, v in tensors.items()}
        return tensors

    def _poll_directive(self) -> None:
        self._polled_at = time.time()
        directive = self._read_directive() if self.dist.is_main else None
        self._polled_until = time.time()
        payload = [0.0, 0.0, 0.0, 0.0]
        if directive is not None:
            payload = [1.0, float(directive.cycle), directive.learning_rate, float(directive.stop)]
        has, cycle, lr, stop = self.dist.broadcast_floats(payload)
        if not has:
            return
        if directive is None:  # other ranks rebuild it from the broadcast
            directive = Directive(cycle=int(cycle), learning_rate=lr, stop=bool(stop))
        self.state.directive = directive
        self.state.cycle = directive.cycle
        self.state.learning_rate = directive.learning_rate
        self._set_lr(directive.learning_rate)
        if self.metrics is not None:
            self.metrics.observe_directive(directive.learning_rate, directive.cycle)
        log.info(
            "directive: cycle %d, lr %.3g, stop %s",
            directive.cycle,
            directive.learning_rate,
            directive.stop,
        )

    def _read_directive(self) -> Directive | None:
        """Rank 0: a new directive from the file, if any; at a cycle's boundary, the wait for it.

        The operator closes cycle j on its first `cycle_steps // eval_every`
        evaluations (schedule.cycle_window). Waiting after the last of them until
        cycle j+1's directive arrives starts cycle j+1 at that step in every run,
        instead of at whichever step rank 0 happened to read it (the other ranks wait
        meanwhile in the broadcast). After a timeout the cycle goes on at the old LR
        and the directive applies when read, as without the wait.
        """
        state = self.state
        directive = self.watcher.poll()
        if directive is not None and not differs(directive, state.directive):
            directive = None
        current = state.directive or Directive(cycle=state.cycle, learning_rate=state.learning_rate)
        if not self._at_cycle_boundary(current) or (
            directive is not None and is_next(directive, current)
        ):
            return directive
        started = time.monotonic()
        arrived = self.watcher.wait_for_next(
            current, self.opts.directive_timeout_seconds, cancelled=lambda: self._terminate
        )
        waited = time.monotonic() - started
        if arrived is not None:
            log.info(
                "step %d: waited %.2f s for cycle %d's directive",
                state.step,
                waited,
                current.cycle + 1,
            )
            return arrived
        if not self._terminate:
            self._gave_up_cycle = current.cycle
            log.warning(
                "step %d: no directive for cycle %d after %.0f s (--directive-timeout-seconds); "
                "going on at LR %.3g, the next directive applies when read",
                state.step,
                current.cycle + 1,
                waited,
                current.learning_rate,
            )
        return directive

    def _at_cycle_boundary(self, current: Directive) -> bool:
        """The current cycle has all its closing evaluations, and more steps are to come."""
        opts, state = self.opts, self.state
        if not opts.wait_for_directive or self.watcher.path is None or current.stop:
            return False
        if state.step >= opts.max_steps or self._gave_up_cycle == current.cycle:
            return False
        closing = evals_per_cycle(opts.cycle_steps, opts.eval_every)
        return sum(e.cycle == current.cycle for e in state.evaluations) >= closing

    def _warm_up(self) -> None:
        """This step's LR: the cycle's, scaled by the warm-up at the cycle's start."""
        state = self.state
        if state.cycle != state.warmup_cycle:  # a directive began a cycle at this step
            state.warmup_cycle, state.cycle_start_step = state.cycle, state.step
        factor = warmup_factor(
            state.step - state.cycle_start_step,
            self.opts.warmup_steps,
            self.opts.warmup_start_factor,
        )
        self._set_lr(state.learning_rate * factor)

    def _train_step(self, prepared: PreparedStep) -> None:
        accum = len(prepared.batches)
        self._warm_up()
        self.module.train()
        started = time.perf_counter()
        # The loss stays on the device until the step's one host sync below: reading it
        # per micro-batch would stall a GPU's queue between micro-batches.
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.dist.device)
        # float: after counting locally, each becomes its sum over ranks (all_sum below).
        samples: float = 0
        tokens: float = 0
        skipped: float = 0
        real: float = 0
        for i, batch in enumerate(prepared.batches):
            weight = 1.0 / accum
            if batch is None:
                batch = self.filler_batch
                weight = 0.0
            last = i == accum - 1
            sync: AbstractContextManager[None] = nullcontext()
            if self.asr.sharded:
                from marco_trainer.train import fsdp

                fsdp.gradient_sync(self.module, last)
            elif not last and self.dist.active:
                sync = cast("DistributedDataParallel", self.module).no_sync()
            with sync:
                loss = self.asr.loss(self.module, batch)
                (loss * weight).backward()
            if weight:
                real += 1
                loss_sum += loss.detach().double()
                samples += int(batch["labels"].shape[0])
                tokens += int((batch["labels"] != IGNORE_INDEX).sum())
            skipped += len(prepared.loaded[i].skipped)
        params = self.asr.trainable_parameters()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.opts.max_grad_norm)
        if self.asr.sharded:  # a DTensor over the shards' norms: its whole value
            from marco_trainer.train import fsdp

            grad_norm = fsdp.local(grad_norm)
        # One all-reduce and one host sync per step. The gradient norm is the same on
        # every rank after DDP's sync (FSDP's: reduced over the shards), so its sum is
        # finite exactly when it is.
        counts = torch.tensor(
            [samples, tokens, skipped, real, float(self._terminate)], dtype=torch.float64
        )
        packed = torch.cat(
            [
                torch.stack([loss_sum, grad_norm.detach().double()]),
                counts.to(self.dist.device, non_blocking=True),
            ]
        )
        total_loss, norm_sum, samples, tokens, skipped, real, terminate = self.dist.all_sum(packed)
        step_loss = total_loss / max(real, 1)
        finite = math.isfinite(step_loss) and math.isfinite(norm_sum)
        if not real:
            # Every file of the step was unreadable: nothing to learn from, and AdamW's
            # momentum would still move the weights. Counted as skipped audio.
            finite = False
            step_loss = float("nan")
        elif finite:
            self.optimizer.step()
            self.state.consecutive_nonfinite = 0
            self.state.loss_sum += step_loss
            self.state.loss_steps += 1
        else:
            self._nonfinite()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.epoch, self.state.offset = prepared.position.epoch, prepared.position.offset
        self.state.samples += int(samples)
        self.state.tokens += int(tokens)
        self.state.skipped_audio += int(skipped)
        self._terminating = bool(terminate)
        elapsed = max(time.perf_counter() - started, 1e-9)
        self._trace.write(
            json.dumps(
                {
                    "step": self.state.step,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "cycle": self.state.cycle,
                    "loss": step_loss if finite else None,
                    "polled": self._polled_at,
                    "polled_until": self._polled_until,
                    "time": time.time(),
                }
            )
            + "\n"
        )
        if self.metrics is not None:
            self.metrics.observe_step(
                step=self.state.step,
                duration_seconds=elapsed,
                samples=samples,
                tokens=tokens,
                loss=step_loss if finite else None,
                gpu_memory=gpu_memory(self.dist.device),
            )
            if skipped:
                self.metrics.skipped_audio.inc(skipped)

    def _nonfinite(self) -> None:
        self.state.nonfinite_steps += 1
        self.state.nonfinite_since_eval += 1
        self.state.consecutive_nonfinite += 1
        if self.metrics is not None:
            self.metrics.nonfinite_steps.inc()
        log.warning("step %d: non-finite loss or gradient, step skipped", self.state.step + 1)
        if self.state.consecutive_nonfinite >= self.opts.max_consecutive_nonfinite:
            self._rollback()

    def _rollback(self) -> None:
        """Back to the best weights (or the initial ones) with fresh optimizer moments."""
        best = existing_dir(self.checkpoints / BEST_CHECKPOINT)
        if best is not None:
            self.asr.load_weights(best)
        else:
            self._restore_initial_weights()
        self.optimizer.state.clear()
        self.state.consecutive_nonfinite = 0
        self.state.rollbacks += 1
        if self.metrics is not None:
            self.metrics.rollbacks.inc()
        log.warning("rolled back to %s", best or "the initial weights")

    # -- evaluation and checkpoints -------------------------------------------------------
    def evaluate(self) -> Evaluation:
        started = time.perf_counter()
        scored = self._score_validation()
        wer = scored.wer
        previous, self._previous_validation = self._previous_validation, scored
        state = self.state
        evaluation = Evaluation(
            step=state.step,
            cycle=state.cycle,
            lr=state.learning_rate,
            wer=wer,
            wer_se=scored.wer_se,
            wer_change_se=scored.change_se(previous),
            cer=scored.cer if is_character_language(self.opts.language) else None,
            loss=state.loss_sum / state.loss_steps if state.loss_steps else None,
            time=time.time(),
            skipped_steps=state.nonfinite_since_eval,
        )
        state.evaluations.append(evaluation)
        state.loss_sum, state.loss_steps, state.nonfinite_since_eval = 0.0, 0, 0
        improved = state.best_wer is None or wer < state.best_wer
        if improved:
            state.best_wer, state.best_step = wer, state.step
            self._best_validation = scored
        weights, optimizer_state, rng_states = self._checkpoint_state()
        if self.dist.is_main:
            if improved:
                best = self._best_info(evaluation)
                save_best(self.checkpoints / BEST_CHECKPOINT, self.asr, best, weights)
            if self.averaging:
                self._keep_for_average(evaluation, weights)
            save_last(
                self.checkpoints / "last", self.asr, optimizer_state, state, weights, rng_states
            )
            atomic_write_text(self.out / EVALUATIONS_FILE, self.history().model_dump_json(indent=2))
            if self.metrics is not None:
                self.metrics.observe_evaluation(
                    evaluation, state.best_wer, time.perf_counter() - started
                )
        self.dist.barrier()
        return evaluation

    def _score_validation(self) -> Validation:
        """The live weights' scores on the validation subset, decoded by all ranks."""
        rank, world = self.dist.rank, self.dist.world_size
        mine = [i for i in range(len(self.val_examples)) if i % world == rank]
        with self._gathered():
            hypotheses, skipped = transcribe_examples(
                self.asr, self.val_examples, mine, self.opts.eval_batch_size, decoding=self.opts
            )  # TrainOptions is a DecodingOptions: the spec's policy, as baseline and evaluate
        merged: dict[int, str] = {}
        unreadable: dict[int, str] = {}
        for part, refused in self.dist.all_gather_object((hypotheses, skipped)):
            merged.update(part)
            unreadable.update(refused)
        if unreadable and not self.counts["validation_corrupt_audio"]:
            log.warning("validation: %d unreadable files left out of WER", len(unreadable))
        self.counts["validation_corrupt_audio"] = len(unreadable)
        wer, cer, results = score(self.val_examples, merged, self.opts.language)
        words = [r.reference_words for r in results]
        return Validation(
            wer=wer,
            cer=cer,
            wer_se=wer_standard_error([r.word_errors for r in results], words),
            errors={i: r.word_errors for i, r in zip(sorted(merged), results, strict=True)},
            words=words,
        )

    def _keep_for_average(self, evaluation: Evaluation, weights: dict | None) -> None:
        """Rank 0: this evaluation's weights kept if it is among the best ``k`` so far; a
        kept one pushed out of them deleted (at most ``k`` copies on the volume)."""
        keep = set(kept_steps(self.state.evaluations, self.opts.average_checkpoints))
        if evaluation.step in keep:
            target = kept_dir(self.checkpoints, evaluation.step)
            if evaluation.step == self.state.best_step:
                # `best` holds these very weights, just written: hard links, not a second
                # serialisation of the model (a later `best` is a new folder swapped in, so
                # the linked files stay as they are).
                best = self.checkpoints / BEST_CHECKPOINT

                def link(folder: Path) -> None:
                    shutil.copytree(best, folder, copy_function=os.link, dirs_exist_ok=True)

                replace_dir(target, link)
            else:
                save_best(target, self.asr, self._best_info(evaluation), weights)
        for step, folder in kept_on_disk(self.checkpoints).items():
            if step not in keep:
                shutil.rmtree(folder)

    def _average_kept(self) -> AveragedInfo | None:
        """The mean of the kept checkpoints, saved as ``averaged``, loaded into the model,
        scored on the validation subset and compared with the single best there (exported
        only if it reads no worse: averaging.average_is_kept); None with fewer than two
        to average."""
        steps = kept_steps(self.state.evaluations, self.opts.average_checkpoints)
        on_disk = kept_on_disk(self.checkpoints)
        steps = [s for s in steps if s in on_disk]
        if len(steps) < 2:
            return None
        target = self.checkpoints / AVERAGED_CHECKPOINT
        if self.dist.is_main:
            averaged = average_weights(self.asr.saved_state(on_disk[s]) for s in steps)
            best = BestInfo.model_validate_json(
                (self.checkpoints / BEST_CHECKPOINT / BEST_FILE).read_text()
            )
            save_best(target, self.asr, best, averaged)
        self.dist.barrier()
        best_scored = self._best_validation
        if best_scored is None:  # resumed after the best was found: its counts were not kept
            self.asr.load_weights(self.checkpoints / BEST_CHECKPOINT)
            best_scored = self._score_validation()
        self.asr.load_weights(target)
        scored = self._score_validation()
        # Only utterances both decodings read (one unreadable in one of them is left out).
        words = dict(zip(scored.errors, scored.words, strict=True))
        common = [i for i in scored.errors if i in best_scored.errors]
        use_mean, difference_se = average_is_kept(
            [best_scored.errors[i] for i in common],
            [scored.errors[i] for i in common],
            [words[i] for i in common],
        )
        info = AveragedInfo(
            steps=steps,
            wer=scored.wer,
            wer_se=scored.wer_se,
            cer=scored.cer,
            best_step=self.state.best_step,
            best_wer=best_scored.wer,
            difference_se=difference_se,
            exported=use_mean,
        )
        if self.dist.is_main:
            atomic_write_text(target / AVERAGED_FILE, info.model_dump_json(indent=2))
        log.info(
            "averaged the checkpoints of steps %s: validation WER %.2f against the best "
            "single %.2f (paired s.e. %s); exporting %s",
            steps,
            scored.wer,
            best_scored.wer,
            f"{difference_se:.2f}" if difference_se is not None else "none",
            "the mean" if use_mean else f"step {self.state.best_step}",
        )
        return info

    def _best_info(self, evaluation: Evaluation) -> BestInfo:
        return BestInfo(
            step=evaluation.step,
            wer=evaluation.wer,
            cer=evaluation.cer,
            family=self.asr.family,
            base_model=model_name(self.opts.model),
            language=self.opts.language,
            train_manifests=[
                str(m) for m in [*self.opts.train_manifests, *self.opts.clean_manifests]
            ],
            train_utterances=len(self.train_examples),
            train_hours=sum(e.duration for e in self.train_examples) / 3600,
            adaptation=self.opts.adaptation,
        )

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        from tqdm import tqdm

        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        opts, state = self.opts, self.state
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        pending: Future | None = None
        bar = tqdm(
            total=opts.max_steps,
            initial=state.step,
            desc="train",
            unit="step",
            disable=not self.dist.is_main,
        )
        stopped = False
        try:
            while True:
                self._poll_directive()
                if state.directive is not None and state.directive.stop:
                    stopped = True
                    break
                if state.step >= opts.max_steps:
                    break
                if self._terminating:
                    self._save_last()
                    return EXIT_TERMINATED
                prepared = pending.result() if pending is not None else self._prepare()
                pending = None
                if self.prefetch and state.step + 1 < opts.max_steps:
                    pending = pool.submit(self._prepare)
                self._train_step(prepared)
                bar.update(1)
                if state.step % opts.eval_every == 0 or state.step == opts.max_steps:
                    if pending is not None:
                        pending.result()  # the processor is not shared across threads
                    evaluation = self.evaluate()
                    bar.set_postfix(wer=f"{evaluation.wer:.2f}", lr=f"{state.learning_rate:.2g}")
            if state.best_step is None:
                self.evaluate()
            averaged = self._average_kept() if self.averaging else None
            self.finished = True
            if self.dist.is_main:
                self._finish(stopped, averaged)
            self.dist.barrier()
            return 0
        finally:
            bar.close()
            pool.shutdown(wait=True)
            signal.signal(signal.SIGTERM, previous)
            if self._trace is not None:
                self._trace.close()

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._terminate = True

    def _finish(self, stopped: bool, averaged: AveragedInfo | None = None) -> None:
        from marco_contract.results import write_stage_result
        from marco_trainer.export import export_checkpoint
        from marco_trainer.train.plot import plot_history

        state = self.state
        history = self.history()
        atomic_write_text(self.out / EVALUATIONS_FILE, history.model_dump_json(indent=2))
        plot_history(history, self.out / "wer.png")
        best = existing_dir(self.checkpoints / BEST_CHECKPOINT)
        if best is None:  # cannot happen: run() evaluates (and saves a best) before this
            raise RuntimeError(f"{self.checkpoints / 'best'}: no checkpoint to export")
        exported, final_wer = best, state.best_wer
        mean = averaged if averaged is not None and averaged.exported else None
        if mean is not None:
            exported, final_wer = self.checkpoints / AVERAGED_CHECKPOINT, mean.wer
        if self.opts.export:
            export_checkpoint(
                exported,
                self.out / EXPORT_DIR,
                baseline_wer=self.opts.baseline_wer,
                final_wer=final_wer,
                steps=state.step,
                averaged_steps=mean.steps if mean is not None else None,
            )
        counts = {k: v for k, v in self.counts.items() if v}
        counts.update(
            {
                "train_utterances": len(self.train_examples),
                "skipped_audio": state.skipped_audio,
                "nonfinite_steps": state.nonfinite_steps,
                "rollbacks": state.rollbacks,
                "corrupt_checkpoints": state.corrupt_checkpoints,
                "feature_cache_utterances": len(self.feature_cache),
            }
        )
        write_stage_result(
            StageResult(
                stage="train",
                wer=round(state.best_wer, 4) if state.best_wer is not None else None,
                best_step=state.best_step,
                steps=state.step,
                family=self.asr.family,
                counts=counts,
                message=("stopped by directive" if stopped else "reached --max-steps")
                + _averaging_message(averaged),
                # In the result, not only in evaluations.json: the operator reads no volume.
                curve=[(e.step, round(e.wer, 4)) for e in history.evaluations],
            ),
            self.out,
        )

    def close(self) -> None:
        self._stop_servers()
        self.dist.close()


def _averaging_message(averaged: AveragedInfo | None) -> str:
    """The result message's account of the checkpoint average: exported, or not and why."""
    if averaged is None:
        return ""
    if averaged.exported:
        return f"; exported the mean of steps {averaged.steps} (validation WER {averaged.wer:.2f}%)"
    return (
        f"; exported step {averaged.best_step} (validation WER {averaged.best_wer:.2f}%): "
        f"the mean of steps {averaged.steps} read {averaged.wer:.2f}%, worse"
    )


def _local_model_dir(source: str) -> Path:
    path = Path(source)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, local_files_only=True))


def run_training(opts: TrainOptions) -> int:
    trainer = Trainer(opts)
    try:
        return trainer.run()
    finally:
        trainer.close()
