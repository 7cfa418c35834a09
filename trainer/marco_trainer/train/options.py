"""Training options (the ``train`` CLI's flags, as one typed object). No torch here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainOptions:
    model: str
    train_manifests: list[str]
    validation_manifest: str
    output_dir: Path
    control_file: str | None = None
    learning_rate: float = 1e-5
    max_steps: int = 1000
    eval_every: int = 50
    eval_samples: int = 200
    eval_batch_size: int = 8
    per_device_batch_size: int = 4
    gradient_accumulation: int = 8
    precision: str = "auto"
    gradient_checkpointing: bool = False
    family: str = "auto"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    full_finetune: bool = False
    language: str | None = "en"
    task: str = "transcribe"
    metrics_port: int = 9400
    metrics_host: str = "0.0.0.0"
    adaptation: str | None = None
    seed: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_consecutive_nonfinite: int = 3
    baseline_wer: float | None = None
    max_new_tokens: int = 128
    prefetch: bool | None = None  # None: on with a GPU, off on CPU
    feature_cache_mb: int | None = None  # None: from the container's memory
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        checks = {
            "--learning-rate": self.learning_rate > 0,
            "--max-steps": self.max_steps > 0,
            "--eval-every": self.eval_every > 0,
            "--eval-samples": self.eval_samples > 0,
            "--per-device-batch-size": self.per_device_batch_size > 0,
            "--gradient-accumulation": self.gradient_accumulation > 0,
            "--precision": self.precision in ("auto", "bf16", "fp32"),
            "--family": self.family in ("auto", "encoder-decoder", "llm"),
            "--metrics-port": 0 <= self.metrics_port < 65536,
            "--feature-cache-mb": self.feature_cache_mb is None or self.feature_cache_mb >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid value for {', '.join(bad)}")
