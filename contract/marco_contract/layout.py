"""Where an adaptation's files are: the stages, and the folder each writes.

The operator plans paths with it (`Layout`: the data volume as a stage's
process sees it, the run's output root, the directive file), the trainer's
stages write where it says, and the run report reads a finished run back
through `RunPaths`. One folder per stage under the output root.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from marco_contract.options import VolumeOptions

STAGES: tuple[str, ...] = (
    "fetch",
    "filter",
    "profile",
    "augment",
    "baseline",
    "trials",
    "train",
    "evaluate",
    "push",
)
#: Downloads what the spec names remotely (a hub model, s3/gs/hf data) onto the volumes,
#: once, before any other stage; on only when something is remote.
FETCH_STAGE = "fetch"
#: Uploads the exported model to spec.output.push, after evaluate; on only when asked.
PUSH_STAGE = "push"
#: The stage of short LR trial runs; each trial writes under its own folder of it.
TRIALS_STAGE = "trials"

#: Each stage's compact result (`marco_contract.formats.StageResult`) in its folder.
RESULT_FILE = "result.json"
#: The filter's kept lines, the clean training manifest of later stages.
KEPT_MANIFEST = "kept.jsonl"
#: The merged target profile in the profile stage's folder.
PROFILE_FILE = "profile.json"
#: The trainer's evaluation history in the train stage's folder.
EVALUATIONS_FILE = "evaluations.json"
#: Written by `marco run` at the output root: the status and the Events.
STATUS_FILE = "status.json"
EVENTS_FILE = "events.jsonl"
REPORT_DIR = "report"
#: The hub model the fetch stage downloaded, in its folder: every later stage loads it.
FETCHED_MODEL_DIR = "model"
#: Beside the fetched model: its hub id, revision and commit (`FetchedModel`), so that
#: the model card names the hub model, not the folder it was loaded from.
FETCHED_MODEL_FILE = "model.json"
#: HF_HOME of every stage, under the output root: the hub client's cache and settings on
#: the shared volume, not in a pod's scratch space.
HF_HOME_DIR = "cache/huggingface"
#: The train stage's checkpoints folder, and in it the best one (what gets exported).
CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT = "best"
#: The exported model (the best checkpoint as a self-contained folder) in train's folder.
EXPORT_DIR = "export"


@dataclass(frozen=True)
class RunPaths:
    """A run's outputs under its output root."""

    output_root: str

    def stage_dir(self, stage: str) -> str:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        return posixpath.join(self.output_root, stage)

    def result_file(self, stage: str) -> str:
        return posixpath.join(self.stage_dir(stage), RESULT_FILE)

    def trial_dir(self, index: int) -> str:
        """Trial `index`'s own folder (checkpoints, evaluations, result) under the stage's."""
        return posixpath.join(self.stage_dir(TRIALS_STAGE), f"lr-{index}")

    @property
    def kept_manifest(self) -> str:
        return posixpath.join(self.stage_dir("filter"), KEPT_MANIFEST)

    @property
    def profile_file(self) -> str:
        return posixpath.join(self.stage_dir("profile"), PROFILE_FILE)

    @property
    def evaluations_file(self) -> str:
        return posixpath.join(self.stage_dir("train"), EVALUATIONS_FILE)

    @property
    def fetched_model(self) -> str:
        return posixpath.join(self.stage_dir(FETCH_STAGE), FETCHED_MODEL_DIR)

    @property
    def fetched_model_file(self) -> str:
        return posixpath.join(self.stage_dir(FETCH_STAGE), FETCHED_MODEL_FILE)

    @property
    def hf_home(self) -> str:
        return posixpath.join(self.output_root, HF_HOME_DIR)

    @property
    def best_checkpoint(self) -> str:
        return posixpath.join(self.stage_dir("train"), CHECKPOINTS_DIR, BEST_CHECKPOINT)

    @property
    def exported_model(self) -> str:
        """The train stage's export: the model evaluate scores and push uploads."""
        return posixpath.join(self.stage_dir("train"), EXPORT_DIR)

    @property
    def status_file(self) -> str:
        return posixpath.join(self.output_root, STATUS_FILE)

    @property
    def events_file(self) -> str:
        return posixpath.join(self.output_root, EVENTS_FILE)

    @property
    def report_dir(self) -> str:
        return posixpath.join(self.output_root, REPORT_DIR)


@dataclass(frozen=True)
class Layout:
    """Where things are for the process that runs a stage.

    `data_root` is where data.mountPath is seen, `output_root` this adaptation's
    output directory, `control_file` the directive file the trainer reads. Rank 0's
    endpoint binds `endpoint_host` (loopback unless in a pod) and serves its history
    on `api_port` (None: on `metrics_port` too), asking for the bearer token in
    `api_token_file` when there is one.
    """

    data_mount: str
    data_root: str
    output_root: str
    control_file: str
    metrics_port: int = 9400
    endpoint_host: str = "127.0.0.1"
    api_port: int | None = None
    api_token_file: str | None = None

    @property
    def run(self) -> RunPaths:
        return RunPaths(self.output_root)

    def data(self, path: str) -> str:
        """A data path from the spec: relative to the volume, or absolute under its mount.

        ValueError for a path that would leave the volume (absolute elsewhere, or
        climbing out with ``..``): the spec's validation refuses those first
        (`marco_operator.api`), this keeps any other caller from mapping one.
        """
        mount = self.data_mount.rstrip("/") or "/"
        absolute = posixpath.isabs(path)
        inside = posixpath.relpath(path, mount) if absolute else posixpath.normpath(path)
        if inside == ".." or inside.startswith("../"):
            raise ValueError(f"{path!r} is outside the data volume (mounted at {mount})")
        return posixpath.join(self.data_root, inside if absolute else path)

    @property
    def volumes(self) -> VolumeOptions:
        """The stages' --data-root and --output-root: where they may read."""
        return VolumeOptions(data_root=self.data_root, output_root=self.output_root)

    def stage_dir(self, stage: str) -> str:
        return self.run.stage_dir(stage)

    def model(self, source: str) -> str:
        """Absolute paths are volume paths; anything else is a hub id, which the fetch stage
        downloaded: its copy under the output root."""
        return self.data(source) if posixpath.isabs(source) else self.run.fetched_model


def output_path(path: str | None, name: str) -> str:
    """The adaptation's directory under the output mount (spec.output.path)."""
    return path or f"marco-asr/{name}"
