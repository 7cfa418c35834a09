"""The AsrAdaptation API: pydantic models of the spec (this module) and the
status (`marco_contract.status`, shared with the trainer's report).

The spec sections that the trainer also reads extend the stage options of
`marco_contract.options` (filter bounds, augmentation draws, the training
budget, LoRA, language): their defaults are defined there, once, and the
trainer's CLIs are built from the same models.

One source of truth: the CRD's openAPIV3Schema is generated from these models
(`marco crd`), the operator and the local driver parse manifests with them, and
the cross-field rules exist twice on purpose — as CEL in the CRD (the API
server refuses a bad object) and as validators here (a cluster without CEL
support, or the local driver, refuses it with the same message).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonDict

from marco_contract.options import (
    MAX_SAMPLES,
    MAX_STEPS,
    AugmentOptions,
    DecodingOptions,
    EvaluateOptions,
    FilterOptions,
    LanguageOptions,
    LoraOptions,
    RetentionOptions,
    TrainingOptions,
)
from marco_contract.status import ApiModel, Family, SigmaKind

GROUP = "asr.marco.dev"
VERSION = "v1alpha1"
KIND = "AsrAdaptation"
PLURAL = "asradaptations"
SINGULAR = "asradaptation"
SHORT_NAMES = ("asra",)
API_VERSION = f"{GROUP}/{VERSION}"

#: Longest accepted metadata.name: child Jobs are `<name>-<stage>` and Indexed
#: pods `<name>-<stage>-<index>`, which must stay a valid 63-character hostname.
MAX_NAME_LENGTH = 45

DAY = 24 * 3600

#: Learning-rate bounds per family when the spec gives none (paper §2).
DEFAULT_LR_BOUNDS: dict[str, tuple[float, float]] = {
    "encoder-decoder": (1e-7, 1e-5),
    "llm": (1e-6, 1e-4),
}


TRIAL_LRS_OUTSIDE = "trials.learningRates must lie inside training.learningRate"
#: Eq. 1 reads the spread of a cycle's evaluations: one evaluation a cycle has none (σ ≡ 0,
#: every cycle at η_max whatever the WER does).
CYCLE_TOO_SHORT = (
    "cycleSteps must be at least 2 x evalEvery (the WER spread of a cycle needs two evaluations)"
)

# Learning-rate limits. Eq. 1 computes η_max − (η_max − η_min)·c; in floating point the
# difference rounds to η_max when η_min is below η_max's last significant digit, and the
# LR then comes out 0.0 (η_max = 1, η_min = 1e-17 gives exactly 0). A floor on every LR
# and a cap on η_max/η_min keep every LR Eq. 1 and Eq. 2 produce positive, finite and
# within a relative 1e-9 of the exact value.

#: Smallest LR any field takes (far below the paper's smallest, 1e-7).
MIN_LEARNING_RATE = 1e-12
#: Largest LR any field takes (an LR of 1 already diverges with Adam).
MAX_LEARNING_RATE = 1.0
#: Widest LR range η_max/η_min (the default ranges span 100).
MAX_LEARNING_RATE_RATIO = 1e6
LR_RATIO_RULE = (
    f"learningRate.max must be at most {MAX_LEARNING_RATE_RATIO:g} times learningRate.min "
    "(wider, Eq. 1 loses η_min to rounding)"
)


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One CEL rule for `x-kubernetes-validations`."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


# ------------------------------------------------------------------ paths and names
#
# Every path of the spec stays on its volume: data paths (manifests, target audio,
# RIR and noise folders, a model folder) relative to the data volume or absolute
# under data.mountPath, the output path relative to output.mountPath; none empty,
# none with a '..' segment, none naming the whole volume. The checks are plain
# string rules, written once as regular expressions that CEL (RE2) and Python read
# alike, so the API server and these validators refuse the same paths. The
# trainer also resolves what it reads against the volumes (symlinks included):
# `marco_contract.manifests.Volumes`.

#: Longest path the spec takes (bounds the CEL rules' cost).
MAX_PATH_LENGTH = 1024
#: Most training manifests (bounds the CEL rules' cost; a folder of them counts once).
MAX_TRAIN_MANIFESTS = 100
#: A mount path: absolute, plain segments (none '.' or '..'), not '/'. Its characters
#: are literal in a regular expression but for '.', which CEL's rule below tolerates.
MOUNT_PATH_PATTERN = r"^(/[A-Za-z0-9_-][A-Za-z0-9._-]*)+/?$"
#: A '..' segment anywhere (CEL's matches() searches, as re.search does).
PARENT_SEGMENT = r"(^|/)[.][.](/|$)"
#: A relative path that names the volume itself ('.', './', '').
VOLUME_ITSELF = r"^[./]*$"
#: A Hugging Face hub id: `name` or `org/name` (huggingface_hub's validate_repo_id).
_HUB_NAME = r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?"
HUB_ID_PATTERN = rf"^({_HUB_NAME}/)?{_HUB_NAME}$"

DATA_PATH_RULE = (
    "must name a file or folder inside the data volume: relative to it or absolute under "
    "data.mountPath, not the volume itself, with no '..' segment"
)
OUTPUT_PATH_RULE = (
    "must name a folder inside the output volume: relative to output.mountPath, not the "
    "volume itself, with no '..' segment"
)
MODEL_SOURCE_RULE = (
    "model.source must be a Hugging Face hub id (name or org/name) or a model folder under "
    "data.mountPath, with no '..' segment"
)
NAME_RULE = (
    "metadata.name must be a DNS-1035 label: lowercase letters, digits and '-', starting "
    "with a letter and ending with a letter or digit"
)
NAME_LENGTH_RULE = (
    f"metadata.name must be at most {MAX_NAME_LENGTH} characters "
    "(child Jobs and pod hostnames append to it)"
)
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: A Kueue LocalQueue name, as the `kueue.x-k8s.io/queue-name` label carries it: a DNS-1123
#: label (a valid label value and a valid object name alike).
QUEUE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_QUEUE_NAME_LENGTH = 63
QUEUE_NAME_RULE = (
    "queueName must be a DNS-1123 label naming a Kueue LocalQueue: at most "
    f"{MAX_QUEUE_NAME_LENGTH} lowercase letters, digits and '-', starting and ending with a "
    "letter or digit"
)


def data_path_problem(path: str, mount: str | None) -> str | None:
    """Why ``path`` is not a path inside the data volume mounted at ``mount``; None when
    it is. Without ``mount`` (it failed its own check) absolute paths are not judged."""
    if re.search(PARENT_SEGMENT, path):
        return f"{path!r} has a '..' segment"
    if not path.startswith("/"):
        return f"{path!r} is the data volume itself" if re.match(VOLUME_ITSELF, path) else None
    if mount is None:
        return None
    if re.match("^" + re.escape(mount) + r"[./]*$", path):
        return f"{path!r} is the data volume itself"
    if not path.startswith(mount if mount.endswith("/") else mount + "/"):
        return f"{path!r} is not under data.mountPath {mount}"
    return None


def output_path_problem(path: str) -> str | None:
    """Why ``path`` is not a folder inside the output volume; None when it is."""
    if path.startswith("/"):
        return f"{path!r} is absolute"
    if re.search(PARENT_SEGMENT, path):
        return f"{path!r} has a '..' segment"
    if re.match(VOLUME_ITSELF, path):
        return f"{path!r} is the output volume itself"
    return None


def model_source_problem(source: str, mount: str | None) -> str | None:
    """Why ``source`` is neither a hub id nor a model folder on the data volume."""
    if source.startswith("/"):
        return data_path_problem(source, mount)
    if not re.match(HUB_ID_PATTERN, source):
        return f"{source!r} is neither a hub id nor an absolute path"
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an adaptation (its children append to it); None when it can."""
    if len(name) > MAX_NAME_LENGTH:
        return f"{NAME_LENGTH_RULE} ({name!r} has {len(name)})"
    if not re.match(NAME_PATTERN, name):
        return f"{NAME_RULE} (got {name!r})"
    return None


def queue_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a Kueue LocalQueue; None when it can."""
    if len(name) > MAX_QUEUE_NAME_LENGTH or not re.match(QUEUE_NAME_PATTERN, name):
        return f"{QUEUE_NAME_RULE} (got {name!r})"
    return None


def _queue_name(name: str | None) -> str | None:
    problem = queue_name_problem(name) if name is not None else None
    if problem:
        raise ValueError(problem)
    return name


def _cel_under_mount(path: str, mount: str) -> str:
    """CEL: the absolute path ``path`` lies under the mount path ``mount``, not at it."""
    prefix = f"({mount}.endsWith('/') ? {mount} : {mount} + '/')"
    # The mount's characters are literal in a regular expression but for '.', which
    # matches itself too, and the prefix is already known to be the mount's.
    return f"({path}.startsWith({prefix}) && !{path}.matches('^' + {mount} + '[./]*$'))"


def cel_inside_data_volume(path: str, mount: str) -> str:
    """CEL: the string expression ``path`` names something inside the data volume whose
    mount path is the expression ``mount`` (`data_path_problem` finds nothing)."""
    return (
        f"(!{path}.matches('{PARENT_SEGMENT}') && ({path}.startsWith('/') ? "
        f"{_cel_under_mount(path, mount)} : !{path}.matches('{VOLUME_ITSELF}')))"
    )


def cel_model_source(source: str, mount: str) -> str:
    """CEL: ``source`` is a hub id or a folder on the data volume (`model_source_problem`)."""
    return (
        f"{source}.startsWith('/') ? (!{source}.matches('{PARENT_SEGMENT}') && "
        f"{_cel_under_mount(source, mount)}) : {source}.matches('{HUB_ID_PATTERN}')"
    )


def _inside_data_volume(path: str, info: ValidationInfo) -> str:
    """A DataSpec path (after `mount_path`, which it reads)."""
    problem = data_path_problem(path, info.data.get("mount_path"))
    if problem:
        raise ValueError(f"{DATA_PATH_RULE} ({problem})")
    return path


def _inside_output_volume(path: str | None) -> str | None:
    problem = output_path_problem(path) if path is not None else None
    if problem:
        raise ValueError(f"{OUTPUT_PATH_RULE} ({problem})")
    return path


# ------------------------------------------------------------ mounts and quantities
#
# What the API server refuses only when the operator creates a stage's Job, after the
# stages before it ran: a malformed quantity (HTTP 400, the Job cannot be decoded) and
# a mount path the pod already has (422). Both are refused here and in the CRD.

#: Folders a stage pod needs as the trainer image and the operator make them (Dockerfile.
#: trainer, resources.py): a data or output mount at one of them, inside one, or above one
#: (hiding it) breaks the container or collides with a mount the operator adds.
RESERVED_MOUNT_PATHS: dict[str, str] = {
    "/dev": "devices, the train pod's /dev/shm, the kubelet's /dev/termination-log",
    "/proc": "the kernel's",
    "/sys": "the kernel's",
    "/etc": "system files, the train pod's directive at /etc/marco/control",
    "/usr": "the system and Python (/usr/local)",
    "/bin": "the system's",
    "/sbin": "the system's",
    "/lib": "the system's",
    "/lib64": "the system's",
    "/opt/marco": "the trainer's Python environment",
    "/home/marco": "the trainer's HOME and its cache volume /home/marco/.cache (HF_HOME)",
    "/tmp": "every stage pod's scratch volume (the root filesystem is read-only)",
}
MOUNT_RESERVED_RULE = (
    "must not be, lie inside or contain a folder the trainer's pod needs: "
    + ", ".join(RESERVED_MOUNT_PATHS)
)
MOUNTS_APART_RULE = (
    "data.mountPath and output.mountPath must differ, neither inside the other (a pod mounts both)"
)


def _as_folder(path: str) -> str:
    """``path`` with one trailing '/', so that prefixes compare whole segments."""
    return path if path.endswith("/") else path + "/"


def mounts_overlap(a: str, b: str) -> bool:
    """The mount paths ``a`` and ``b`` are equal or one lies inside the other."""
    a, b = _as_folder(a), _as_folder(b)
    return a.startswith(b) or b.startswith(a)


def mount_path_problem(path: str) -> str | None:
    """Why a spec mount path collides with a folder the pod needs; None when it does not."""
    for reserved, what in RESERVED_MOUNT_PATHS.items():
        if mounts_overlap(path, reserved):
            return f"{path!r} overlaps {reserved} ({what})"
    return None


def cel_mount_path_free(mount: str) -> str:
    """CEL: the mount path ``mount`` overlaps no reserved folder (`mount_path_problem`)."""
    folder = f"({mount}.endsWith('/') ? {mount} : {mount} + '/')"
    reserved = ", ".join(f"'{_as_folder(r)}'" for r in RESERVED_MOUNT_PATHS)
    return f"[{reserved}].all(r, !({folder}.startsWith(r) || r.startsWith({folder})))"


def cel_mounts_apart(a: str, b: str) -> str:
    """CEL: the mount paths ``a`` and ``b`` do not overlap (`mounts_overlap`)."""
    fa = f"({a}.endsWith('/') ? {a} : {a} + '/')"
    fb = f"({b}.endsWith('/') ? {b} : {b} + '/')"
    return f"!({fa}.startsWith({fb}) || {fb}.startsWith({fa}))"


def _free_mount(path: str) -> str:
    problem = mount_path_problem(path)
    if problem:
        raise ValueError(f"{MOUNT_RESERVED_RULE} ({problem})")
    return path


#: A Kubernetes quantity (k8s.io/apimachinery resource.Quantity: sign, digits with a
#: decimal point, then a binary suffix Ki..Ei, a decimal one n u m k M G T P E, or a
#: decimal exponent), positive: '-', a zero ('0', '0Gi', '.0') and whitespace are refused.
#: The exponent has at most two digits (the parser takes any, and '1e999999999' is no
#: size). Written for RE2 (CEL, the API server's pattern) and Python alike.
_POSITIVE_NUMBER = r"([0-9]*[1-9][0-9]*([.][0-9]*)?|[0-9]*[.][0-9]*[1-9][0-9]*)"
QUANTITY_PATTERN = rf"^[+]?{_POSITIVE_NUMBER}([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]{{1,2}})?$"
MAX_QUANTITY_LENGTH = 64
QUANTITY_RULE = (
    "must be a positive Kubernetes quantity: a number with an optional suffix "
    "(Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or an exponent such as e9), e.g. 32Gi, 500m, 1.5"
)


def _quantity(value: str) -> str:
    if not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{QUANTITY_RULE} (got {value!r})")
    return value


#: A positive Kubernetes quantity (the CRD holds it to the same pattern).
Quantity = Annotated[
    str,
    Field(max_length=MAX_QUANTITY_LENGTH, json_schema_extra={"pattern": QUANTITY_PATTERN}),
    AfterValidator(_quantity),
]


# ------------------------------------------------------------------------ volumes
#
# Stages hand their results to each other through files (the filter's kept manifest, the
# profile, the augmented audio, checkpoints): on a cluster every stage pod mounts one shared
# PersistentVolumeClaim, or the next stage finds nothing. The claim is optional in the
# models because `marco run` maps the volumes to local folders; the CRD requires it (CEL)
# and the operator checks it again (`cluster_problem`), so no cluster Job runs without it.

#: A PersistentVolumeClaim's name: a DNS-1123 subdomain (what the API server requires).
CLAIM_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ClaimName = Annotated[str, Field(min_length=1, max_length=253, pattern=CLAIM_NAME_PATTERN)]
VOLUME_CLAIM_RULE = (
    "required on a cluster: every stage pod mounts this PersistentVolumeClaim and each "
    "stage reads what the one before wrote there, so without it no stage would see "
    "another's results. Name a PVC of the adaptation's namespace (ReadWriteMany when "
    "resources.nodes or a stage's shards (profile, augmentation, baseline, evaluation) is "
    "above 1, or several LR "
    "trials run); `marco run` needs none (it maps the volume to --data-dir)"
)


def cluster_problem(spec: AsrAdaptationSpec) -> str | None:
    """Why a valid spec cannot run on a cluster (the CRD's cluster-only rule, for a cluster
    without CEL); None when it can. The local driver does not ask."""
    if spec.data.volume_claim is None:
        return f"spec.data.volumeClaim: {VOLUME_CLAIM_RULE}"
    return None


#: A path of the data section: checked against its mountPath, declared before it.
DataPath = Annotated[
    str,
    Field(min_length=1, max_length=MAX_PATH_LENGTH),
    AfterValidator(_inside_data_volume),
]
#: A path of another section on the data volume: AsrAdaptationSpec checks it (the mount
#: path is the data section's).
VolumePath = Annotated[str, Field(min_length=1, max_length=MAX_PATH_LENGTH)]


# ------------------------------------------------------------------ remote sources
#
# What lies elsewhere: the fetch stage copies it onto the volumes before any other stage
# runs (fsspec's URLs; hf:// is huggingface_hub's HfFileSystem), the push stage uploads
# the exported model to one. Written for RE2 (CEL, the CRD's patterns) and Python alike.

#: An object store bucket (S3 and GCS bucket names: lowercase, digits, '.', '-', '_').
_BUCKET = r"(s3|gs)://[a-z0-9][a-z0-9._-]*[a-z0-9]"
#: Where data may come from: a file or folder in a bucket, or in a hub dataset repo (at a
#: revision after '@', e.g. hf://datasets/org/corpus@v1/test).
REMOTE_DATA_PATTERN = (
    rf"^({_BUCKET}|hf://datasets/({_HUB_NAME}/)?{_HUB_NAME}(@[A-Za-z0-9._-]+)?)(/[^\s]*)?$"
)
REMOTE_DATA_RULE = "must be an s3://bucket/..., gs://bucket/... or hf://datasets/org/name/... URL"
#: Where the exported model may go: a hub model repo, or a folder in a bucket.
PUSH_URI_PATTERN = rf"^({_BUCKET}(/[^\s]*)?|hf://({_HUB_NAME}/)?{_HUB_NAME})$"
PUSH_URI_RULE = "must be hf://org/name (a hub model repo), s3://bucket/... or gs://bucket/..."
#: A hub revision: a branch, a tag or a commit hash.
REVISION_PATTERN = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"
REVISION_RULE = "model.revision needs a hub id in model.source (a model folder has no revisions)"
#: A Secret's name (DNS subdomain) and a key in it.
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


def _matching(pattern: str, rule: str) -> Any:
    """A validator that refuses a string not matching ``pattern``, saying ``rule``."""

    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"{rule} (got {value!r})")
        return value

    return AfterValidator(check)


#: A data source URL (the CRD holds it to the same pattern).
RemoteDataUri = Annotated[
    str,
    Field(max_length=MAX_PATH_LENGTH, json_schema_extra={"pattern": REMOTE_DATA_PATTERN}),
    _matching(REMOTE_DATA_PATTERN, REMOTE_DATA_RULE),
]
PushUri = Annotated[
    str,
    Field(max_length=MAX_PATH_LENGTH, json_schema_extra={"pattern": PUSH_URI_PATTERN}),
    _matching(PUSH_URI_PATTERN, PUSH_URI_RULE),
]


# --------------------------------------------------------------------------- spec


class LoraSpec(LoraOptions):  # r, alpha, dropout, target_modules (marco_contract.options)
    enabled: bool = Field(
        default=True, description="Train LoRA adapters (llm family); false = full fine-tuning."
    )


class SecretKeyRef(ApiModel):
    name: str = Field(min_length=1, max_length=253, pattern=SECRET_NAME_PATTERN)
    key: str = Field(default="token", min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)


class ModelSpec(LanguageOptions):  # task, language
    source: str = Field(
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description="Hugging Face hub id (org/name), downloaded once by the fetch stage, or a "
        "model directory on the data volume, absolute under data.mountPath.",
    )
    revision: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=REVISION_PATTERN,
        description="The hub revision (branch, tag or commit) the fetch stage downloads; "
        "default the repo's main branch.",
    )
    token_secret: SecretKeyRef | None = Field(
        default=None,
        description="Secret holding a Hugging Face token (key default 'token'): HF_TOKEN of "
        "the fetch and push pods only, for gated or private repos and for pushing.",
    )
    family: Family | None = Field(
        default=None,
        description="encoder-decoder (Whisper) or llm (Qwen2-Audio); detected when omitted.",
    )
    decoder_layers: int | None = Field(
        default=None,
        ge=1,
        le=1024,  # the deepest speech decoders have a few dozen layers
        description="Decoder depth; picks cycle 0's LR (deep decoders start at the lower bound). "
        "Known for Whisper hub ids.",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec)


class DataSource(ApiModel):
    uri: RemoteDataUri = Field(
        description="s3://bucket/..., gs://bucket/... or hf://datasets/org/name[@rev]/...: a "
        "file or a folder, copied by the fetch stage."
    )
    path: VolumePath = Field(
        description="Folder on the data volume it is copied into (a file keeps its name, a "
        "folder's contents land in it); relative to it or absolute under data.mountPath."
    )


class DataSpec(ApiModel):
    volume_claim: ClaimName | None = Field(
        default=None,
        description="PersistentVolumeClaim holding manifests and audio, mounted at mountPath "
        "by every stage pod; the stages' outputs go there too unless output.volumeClaim names "
        "another. Required on a cluster (ReadWriteMany when resources.nodes, a stage's shards "
        "or LR trials run pods at once); `marco run` maps the volume to --data-dir instead.",
    )
    mount_path: Annotated[str, AfterValidator(_free_mount)] = Field(
        default="/data", pattern=MOUNT_PATH_PATTERN, max_length=256
    )
    train: list[DataPath] = Field(
        min_length=1,
        max_length=MAX_TRAIN_MANIFESTS,
        description="Training manifests (JSONL or directories), relative to mount.",
    )
    validation: DataPath = Field(
        description="Target-domain validation manifest (baseline and cycle WER)."
    )
    test: DataPath | None = Field(
        default=None, description="Target-domain test manifest (final WER)."
    )
    target_audio: DataPath | None = Field(
        default=None,
        description="Unlabeled target-domain audio (directory or manifest) for the profile.",
    )
    sources: list[DataSource] = Field(
        default_factory=list,
        max_length=MAX_TRAIN_MANIFESTS,
        description="Remote files or folders the fetch stage copies onto the data volume "
        "before any stage reads it; train, validation, test name the copies.",
    )

    @model_validator(mode="after")
    def _sources_on_the_volume(self) -> DataSpec:
        for index, source in enumerate(self.sources):
            problem = data_path_problem(source.path, self.mount_path)
            if problem:
                raise ValueError(f"data.sources[{index}].path {DATA_PATH_RULE} ({problem})")
        return self

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    # The CRD carries no default for a list: absent, there is nothing to check.
                    "!has(self.sources) || self.sources.all(s, "
                    + cel_inside_data_volume("s.path", "self.mountPath")
                    + ")",
                    f"data.sources[].path {DATA_PATH_RULE}",
                    ".sources",
                ),
                cel(
                    f"self.train.all(p, {cel_inside_data_volume('p', 'self.mountPath')})",
                    DATA_PATH_RULE,
                    ".train",
                ),
                cel(
                    cel_inside_data_volume("self.validation", "self.mountPath"),
                    DATA_PATH_RULE,
                    ".validation",
                ),
                *(
                    cel(
                        f"!has(self.{name}) || "
                        + cel_inside_data_volume(f"self.{name}", "self.mountPath"),
                        DATA_PATH_RULE,
                        f".{name}",
                    )
                    for name in ("test", "targetAudio")
                ),
                cel(
                    cel_mount_path_free("self.mountPath"),
                    MOUNT_RESERVED_RULE,
                    ".mountPath",
                ),
                # Only the API server reads this rule: `marco run` takes a spec without a
                # claim (cluster_problem is the operator's copy of it).
                cel("has(self.volumeClaim)", VOLUME_CLAIM_RULE, ".volumeClaim"),
            ]
        }
    )


class FilterSpec(FilterOptions):  # min_duration, max_duration, max_chars_per_second
    enabled: bool = True

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.minDuration < self.maxDuration", "minDuration must be below maxDuration")
            ]
        }
    )

    @model_validator(mode="after")
    def _durations(self) -> FilterSpec:
        if self.min_duration >= self.max_duration:
            raise ValueError("minDuration must be below maxDuration")
        return self


class ProfileSpec(ApiModel):
    enabled: bool = True
    shards: int = Field(default=1, ge=1, le=1000, description="Pods of the profile Indexed Job.")


SPEED_RULE = "speedFactors needs preset profile"
BABBLE_PRESET_RULE = "babbleTalkers needs preset profile"
BABBLE_NOISE_RULE = "babbleTalkers and noisePath both name the noise: set one"


class AugmentationSpec(AugmentOptions):  # copies, seed
    enabled: bool = True
    preset: Literal["profile", "telephony"] = Field(
        default="profile",
        description="profile: Eq. 3 driven by the measured target profile; telephony: Covo-DA.",
    )
    keep_original: bool = Field(default=True, description="Train on original + augmented audio.")
    shards: int = Field(default=1, ge=1, le=1000)
    rir_path: VolumePath | None = Field(
        default=None, description="Directory of room impulse responses on the data volume."
    )
    noise_path: VolumePath | None = Field(
        default=None, description="Directory of noise recordings on the data volume."
    )

    # The telephony preset's parameters have no speed step: refused, not ignored.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.speedFactors) || size(self.speedFactors) == 0 || "
                    "!has(self.preset) || self.preset != 'telephony'",
                    SPEED_RULE,
                ),
                cel(
                    "!has(self.babbleTalkers) || self.babbleTalkers == 0 || "
                    "!has(self.preset) || self.preset != 'telephony'",
                    BABBLE_PRESET_RULE,
                ),
                cel(
                    "!has(self.babbleTalkers) || self.babbleTalkers == 0 || !has(self.noisePath)",
                    BABBLE_NOISE_RULE,
                ),
            ]
        }
    )

    @model_validator(mode="after")
    def _speed_needs_the_profile_chain(self) -> AugmentationSpec:
        if self.speed_factors and self.preset == "telephony":
            raise ValueError(SPEED_RULE)
        return self

    @model_validator(mode="after")
    def _babble_is_the_profile_chains_noise(self) -> AugmentationSpec:
        if self.babble_talkers and self.preset == "telephony":
            raise ValueError(BABBLE_PRESET_RULE)
        if self.babble_talkers and self.noise_path is not None:
            raise ValueError(BABBLE_NOISE_RULE)
        return self


#: A decoding shard is a pod with a GPU: past a few hundred for one test set is a typo.
MAX_DECODING_SHARDS = 256
DECODING_SHARDS_DESCRIPTION = (
    "Pods of the stage's Indexed Job, one GPU each, each decoding every shards-th utterance; "
    "the WER is merged from their error counts, the same as one pod's. `marco run` decodes "
    "in one process whatever the value."
)


def _shards_within(shards: int, utterances: int | None, field: str, bound: str) -> None:
    """More shards than utterances leaves some with nothing to decode: a pod and a GPU each."""
    if utterances is not None and shards > utterances:
        raise ValueError(
            f"{field}.shards ({shards}) is above {bound} ({utterances}): "
            "some shards would decode nothing"
        )


class BaselineSpec(ApiModel):
    enabled: bool = True
    samples: int = Field(
        default=200, ge=1, le=MAX_SAMPLES, description="Validation utterances measured for WER0."
    )
    shards: int = Field(
        default=1, ge=1, le=MAX_DECODING_SHARDS, description=DECODING_SHARDS_DESCRIPTION
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.shards <= self.samples", "baseline.shards must not exceed samples")
            ]
        }
    )

    @model_validator(mode="after")
    def _shards_have_work(self) -> BaselineSpec:
        _shards_within(self.shards, self.samples, "baseline", "baseline.samples")
        return self


class LearningRateBounds(ApiModel):
    min: float = Field(ge=MIN_LEARNING_RATE, le=MAX_LEARNING_RATE, description="η_min.")
    max: float = Field(ge=MIN_LEARNING_RATE, le=MAX_LEARNING_RATE, description="η_max.")

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.min < self.max", "learningRate.min must be below learningRate.max"),
                cel(f"self.max <= self.min * {MAX_LEARNING_RATE_RATIO:.1f}", LR_RATIO_RULE),
            ]
        }
    )

    @model_validator(mode="after")
    def _ordered(self) -> LearningRateBounds:
        if self.min >= self.max:
            raise ValueError("learningRate.min must be below learningRate.max")
        if self.max > self.min * MAX_LEARNING_RATE_RATIO:
            raise ValueError(LR_RATIO_RULE)
        return self


#: How the early stop reads `patience` evaluations (docs/method.md, early stopping).
EarlyStoppingMode = Literal["per-evaluation", "cumulative"]


class EarlyStoppingSpec(ApiModel):
    patience: int = Field(
        default=6, ge=1, le=10_000, description="Evaluations without improvement before stopping."
    )
    min_improvement: float = Field(
        default=0.1, ge=0, le=100, description="WER points (percent) that count as an improvement."
    )
    mode: EarlyStoppingMode = Field(
        default="per-evaluation",
        description="per-evaluation (the paper's reading): stop after `patience` evaluations "
        "that each failed to beat the best by minImprovement; cumulative (ours): stop when "
        "the best improved by less than minImprovement over the last `patience` evaluations "
        "together, so a slow steady descent goes on.",
    )


# max_steps, eval_every, ..., gradient_checkpointing; warmup_steps, spec_augment, freeze, ...
class TrainingSpec(TrainingOptions, RetentionOptions):
    learning_rate: LearningRateBounds | None = Field(
        default=None,
        description="[η_min, η_max]; defaults per family: [1e-7, 1e-5] encoder-decoder, "
        "[1e-6, 1e-4] llm.",
    )
    initial_learning_rate: float | None = Field(
        default=None,
        ge=MIN_LEARNING_RATE,
        le=MAX_LEARNING_RATE,
        description="Cycle 0's LR, for either family; default from the bounds (encoder-decoder) "
        "or Eq. 2 of the baseline WER (llm, which then needs the baseline).",
    )
    sigma_ref: float = Field(
        default=0.5, gt=0, le=100, description="σ_ref of Eq. 1, in WER points (at most 100)."
    )
    sigma: SigmaKind = Field(
        default="population",
        description="σ_WER of Eq. 1: population (the paper's: spread around the cycle's mean) "
        "or trend-residual (ours: spread around the least-squares line of WER against step, "
        "so a steady descent reads as stable) or noise-excess (ours: the population spread "
        "beyond the validation subset's sampling noise, sqrt(max(0, σ² − noise)), the noise "
        "from how consecutive evaluations of the same utterances differ by chance, "
        "mean(wer_change_se²)/2, so a small subset's noise does not read as instability) "
        "or descent-excess (ours: the spread around the best non-increasing fit of the "
        "cycle's WERs, beyond the same noise, so a descent of any shape reads as stable and "
        "only a rise or a bounce lowers the LR).",
    )
    max_cycles: int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="Stop after this many cycles."
    )
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    # A day: a stop is a checkpoint and an exit, minutes at most.
    stop_grace_period_seconds: int = Field(
        default=300,
        ge=0,
        le=DAY,
        description="A stop not honoured within this is enforced: the train Job is deleted and "
        "the best checkpoint is exported and evaluated by the evaluate stage.",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.cycleSteps >= 2 * self.evalEvery", CYCLE_TOO_SHORT),
                cel(
                    "!has(self.learningRate) || !has(self.initialLearningRate) || "
                    "(self.initialLearningRate >= self.learningRate.min && "
                    "self.initialLearningRate <= self.learningRate.max)",
                    "initialLearningRate must lie inside learningRate",
                ),
            ]
        }
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainingSpec:
        if self.cycle_steps < 2 * self.eval_every:
            raise ValueError(CYCLE_TOO_SHORT)
        bounds, first = self.learning_rate, self.initial_learning_rate
        if bounds is not None and first is not None and not bounds.min <= first <= bounds.max:
            raise ValueError("initialLearningRate must lie inside learningRate")
        return self


class TrialsSpec(ApiModel):
    """Pre-finetuning LR trials (paper §2): short runs that choose cycle 0's LR."""

    enabled: bool = Field(
        default=False,
        description="Run short trials from the initial weights at a few LRs and start cycle 0 "
        "at the one with the lowest validation WER.",
    )
    count: int = Field(
        default=3,
        ge=2,
        le=16,
        description="Candidate LRs, log-spaced over training.learningRate (bounds included).",
    )
    learning_rates: (
        list[Annotated[float, Field(ge=MIN_LEARNING_RATE, le=MAX_LEARNING_RATE)]] | None
    ) = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="Explicit candidate LRs instead of count log-spaced ones; inside the bounds.",
    )
    # Trials are short runs: 100k steps each is already longer than most trainings.
    steps: int = Field(default=50, ge=1, le=100_000, description="Optimizer steps of each trial.")
    eval_every: int = Field(
        default=10, ge=1, le=100_000, description="Steps between a trial's validation WERs."
    )


class EvaluationSpec(EvaluateOptions):  # max_samples
    enabled: bool = True
    shards: int = Field(
        default=1, ge=1, le=MAX_DECODING_SHARDS, description=DECODING_SHARDS_DESCRIPTION
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.maxSamples) || self.shards <= self.maxSamples",
                    "evaluation.shards must not exceed maxSamples",
                )
            ]
        }
    )

    @model_validator(mode="after")
    def _shards_have_work(self) -> EvaluationSpec:
        _shards_within(self.shards, self.max_samples, "evaluation", "evaluation.maxSamples")
        return self


class DecodingSpec(DecodingOptions):  # max_new_tokens, tokens_per_second, ..., thresholds
    """The one decoding policy of baseline, train's validation and evaluate."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.temperatureFallback) || self.temperatureFallback.all(t, t > 0.0)",
                    "temperatureFallback: temperatures must be above 0",
                ),
                # Absent, temperatureFallback is its default (five temperatures): the CRD
                # carries no default for a list, so CEL reads absence as that.
                cel(
                    "(has(self.temperatureFallback) && size(self.temperatureFallback) == 0) "
                    "|| self.compressionRatioThreshold > 0.0 || has(self.logprobThreshold)",
                    "temperatureFallback needs compressionRatioThreshold or logprobThreshold",
                ),
            ]
        }
    )


#: Longest stage deadline: 90 days (the default is a day, a week for train).
MAX_STAGE_DEADLINE = 90 * DAY


class Toleration(ApiModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    # A year (Kubernetes takes any int64; nothing waits that long for an evicted pod).
    toleration_seconds: int | None = Field(default=None, le=366 * DAY)


class StageDeadlines(ApiModel):
    """Seconds a stage's Job may be active (its activeDeadlineSeconds), per stage.

    Past it Kubernetes stops the Job's pods and the stage fails, saying so: a pod that can
    never start (a bad image, a missing ServiceAccount or Secret, a claim that never binds)
    fails its stage instead of waiting forever. A day for every stage but train, a week
    for train; raise them for a corpus that takes longer. `marco run` stops a stage process
    that runs longer the same way.
    """

    fetch: int = Field(default=DAY, ge=1, le=MAX_STAGE_DEADLINE)
    filter: int = Field(default=DAY, ge=1, le=MAX_STAGE_DEADLINE)
    profile: int = Field(default=DAY, ge=1, le=MAX_STAGE_DEADLINE)
    augment: int = Field(default=DAY, ge=1, le=MAX_STAGE_DEADLINE)
    baseline: int = Field(default=DAY, ge=1, le=MAX_STAGE_DEADLINE)
    trials: int = Field(
        default=DAY, ge=1, le=MAX_STAGE_DEADLINE, description="Each LR trial's Job."
    )
    train: int = Field(default=7 * DAY, ge=1, le=MAX_STAGE_DEADLINE)
    evaluate: int = Field(default=DAY, ge=1, le=MAX_STAGE_DEADLINE)
    push: int = Field(default=DAY, ge=1, le=MAX_STAGE_DEADLINE)

    def of(self, stage: str) -> int:
        """The deadline of `stage` (a name in marco_contract.layout.STAGES)."""
        value = getattr(self, stage, None)
        if not isinstance(value, int):
            raise ValueError(f"no deadline for stage {stage!r}")
        return value


#: The gang schedulers a multi-node train Job may ask for, each to the schedulerName its
#: project's install gives it (Volcano's chart: `volcano`; scheduler-plugins' second-scheduler
#: chart: `scheduler-plugins-scheduler`): the default of gangScheduling.schedulerName.
GangScheduler = Literal["volcano", "coscheduling"]
GANG_SCHEDULER_NAMES: dict[str, str] = {
    "volcano": "volcano",
    "coscheduling": "scheduler-plugins-scheduler",
}
GANG_QUEUE_RULE = (
    "resources.gangScheduling and a Kueue queue (queueName, or the operator's default "
    "queue) exclude each other: under Kueue, use its waitForPodsReady (all pods of an "
    "admitted Job ready, or the Job is requeued) as the all-or-nothing; drop one of the two"
)


class GangSchedulingSpec(ApiModel):
    """All-or-nothing scheduling of a multi-node train Job: the operator creates a PodGroup
    (`<name>-train`, minMember = resources.nodes) before the Job, and its pods ask the gang
    scheduler for a place together, so that no node's pod holds GPUs while waiting for the
    others. Only for the train Job with nodes > 1: every other Job's pods run on their own."""

    scheduler: GangScheduler = Field(
        description="volcano: a scheduling.volcano.sh/v1beta1 PodGroup, pods annotated "
        "scheduling.k8s.io/group-name; coscheduling (scheduler-plugins): a "
        "scheduling.x-k8s.io/v1alpha1 PodGroup, pods labelled scheduling.x-k8s.io/pod-group."
    )
    scheduler_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="The train pods' schedulerName. Default: volcano for volcano, "
        "scheduler-plugins-scheduler for coscheduling (each project's chart's name).",
    )

    def pod_scheduler(self) -> str:
        """The schedulerName of the gang's pods: the spec's, else the scheduler's default."""
        return self.scheduler_name or GANG_SCHEDULER_NAMES[self.scheduler]


def gang_queue_problem(spec: AsrAdaptationSpec, queue: str | None) -> str | None:
    """Why the spec's gang scheduling cannot go with the Kueue `queue` its Jobs would wait
    in (spec.queueName, else the operator's default); None when there is no clash."""
    if spec.resources.gang_scheduling is None or queue is None:
        return None
    whose = "spec.queueName" if spec.queue_name == queue else "the operator's default queue"
    return f"{GANG_QUEUE_RULE} (queue {queue!r}, {whose})"


class ResourcesSpec(ApiModel):
    image: str = Field(default="ghcr.io/marco-asr/trainer:0.1.0", min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    nodes: int = Field(default=1, ge=1, le=256, description="Training pods (torchrun nodes).")
    gpus_per_node: int = Field(default=1, ge=0, le=16, description="0 trains on CPU.")
    gpu_resource_name: str = Field(default="nvidia.com/gpu", min_length=1)
    cpu: Quantity = Field(
        default="4", description="CPU request of every stage pod (a Kubernetes quantity)."
    )
    memory: Quantity = Field(
        default="32Gi",
        description="Memory request and limit of every stage pod (a Kubernetes quantity).",
    )
    # Unset by default: the operator cannot see which GPU a node has (and a cluster may
    # mix them); a guess would refuse runs that fit, or pass ones that do not.
    gpu_memory: Quantity | None = Field(
        default=None,
        description="Memory of one GPU (a Kubernetes quantity, e.g. 80Gi). Set, a train or "
        "trials stage whose estimated memory per GPU (status.memory) exceeds it is refused "
        "before its Job is created; unset, nothing is refused on GPU memory.",
    )
    shared_memory: Quantity = Field(
        default="8Gi",
        description="/dev/shm size for data workers/NCCL (its emptyDir's sizeLimit).",
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class_name: str | None = None
    service_account_name: str | None = Field(
        default=None, description="Trainer pods' ServiceAccount (it needs no API rights)."
    )
    # Retrying a failing pod more than 100 times only delays the failure.
    backoff_limit: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Pod retries per stage Job (per index for Indexed Jobs: shards, train "
        "nodes). A pod the cluster takes away (preemption, eviction, drain) spends none.",
    )
    # Each restart re-runs the rendezvous and resumes from checkpoints/last: past a few,
    # the failure is the code's or the data's, not the hardware's.
    max_restarts: int = Field(
        default=3,
        ge=0,
        le=100,
        description="torchrun --max-restarts of the train stage: how many times the elastic "
        "agents restart every worker (from checkpoints/last) after a worker or node fails, "
        "before the train pod fails and the Job's retries take over.",
    )
    gang_scheduling: GangSchedulingSpec | None = Field(
        default=None,
        description="Gang scheduling of the train pods when nodes > 1 (Volcano or "
        "scheduler-plugins' coscheduling, installed on the cluster); none by default. "
        "Not with a Kueue queue (its waitForPodsReady is the all-or-nothing there).",
    )
    stage_deadline_seconds: StageDeadlines = Field(
        default_factory=StageDeadlines,
        description="Seconds each stage's Job may be active before it fails (its "
        "activeDeadlineSeconds): a day per stage, a week for train.",
    )


class PushSpec(ApiModel):
    uri: PushUri = Field(
        description="Where the push stage uploads the exported model: hf://org/name (a hub "
        "model repo, created if missing) or s3://bucket/..., gs://bucket/... (a folder)."
    )
    private: bool = Field(
        default=True, description="A hub repo the push creates is private (hf:// only)."
    )
    commit_message: str = Field(
        default="marco-asr: adapted model",
        min_length=1,
        max_length=1024,
        description="The hub commit's message (hf:// only).",
    )


class OutputSpec(ApiModel):
    volume_claim: ClaimName | None = Field(
        default=None,
        description="PersistentVolumeClaim for the outputs, mounted at mountPath; defaults to "
        "data.volumeClaim (one shared volume).",
    )
    mount_path: Annotated[str, AfterValidator(_free_mount)] = Field(
        default="/output", pattern=MOUNT_PATH_PATTERN, max_length=256
    )
    path: Annotated[str | None, AfterValidator(_inside_output_volume)] = Field(
        default=None,
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description="Directory under the mount; default marco-asr/<name>.",
    )
    push: PushSpec | None = Field(
        default=None,
        description="Upload the exported model after evaluation (the push stage).",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.path) || (!self.path.startsWith('/') && "
                    f"!self.path.matches('{PARENT_SEGMENT}') && "
                    f"!self.path.matches('{VOLUME_ITSELF}'))",
                    OUTPUT_PATH_RULE,
                    ".path",
                ),
                cel(
                    cel_mount_path_free("self.mountPath"),
                    MOUNT_RESERVED_RULE,
                    ".mountPath",
                ),
            ]
        }
    )


# ------------------------------------------------------------ pod template overrides
#
# What a platform adds to the stage pods (env, volumes, annotations, pull secrets,
# affinity...), shaped as Kubeflow Trainer v2's TrainJob.spec.podTemplateOverrides: a list of
# {targetJobs, metadata, spec}, `targetJobs` naming stages (Kubeflow's names its replicated
# Jobs; absent here = every stage), `spec.containers` naming the one container, `trainer`.
# overrides.py merges them into every stage Job's pod template, trials and every torchrun
# pod included. Kubernetes' own schemas of a volume source and of affinity are huge, so those
# are kept whole (x-kubernetes-preserve-unknown-fields) and only their names and mount paths
# are checked here; the API server checks the rest when the Job is created.

#: The stages an override can target (marco_contract.layout.STAGES; a test keeps them equal).
StageName = Literal[
    "fetch", "filter", "profile", "augment", "baseline", "trials", "train", "evaluate", "push"
]
#: The volumes resources.py gives a stage pod: an override may neither replace nor mount them.
OPERATOR_VOLUMES: tuple[str, ...] = ("data", "output", "control", "endpoint", "tmp", "cache", "shm")
#: The environment resources.py sets (the trainer's contract, its writable caches, the hub
#: client's offline switches, torchrun's unshared rendezvous store: plan.TORCHRUN_ENV), and
#: HF_TOKEN: spec.model.tokenSecret gives it to the two pods that go online (fetch, push)
#: and to no other.
OPERATOR_ENV: tuple[str, ...] = (
    "HF_HOME", "MPLCONFIGDIR", "PYTHONUNBUFFERED", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
    "HF_TOKEN", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE",
)  # fmt: skip
OPERATOR_ENV_PREFIX = "MARCO_"
#: Pod labels the operator selects its pods by, and the ones the Job controller sets.
RESERVED_LABELS: tuple[str, ...] = ("app.kubernetes.io/managed-by", "job-name", "controller-uid")
RESERVED_LABEL_PREFIXES: tuple[str, ...] = (f"{GROUP}/", "batch.kubernetes.io/")
RESERVED_ANNOTATION_PREFIX = f"{GROUP}/"
#: Kubernetes' volume sources (core/v1 VolumeSource): a volume names exactly one.
VOLUME_SOURCES: tuple[str, ...] = (
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap", "csi",
    "downwardAPI", "emptyDir", "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk",
    "gitRepo", "glusterfs", "hostPath", "image", "iscsi", "nfs", "persistentVolumeClaim",
    "photonPersistentDisk", "portworxVolume", "projected", "quobyte", "rbd", "scaleIO", "secret",
    "storageos", "vsphereVolume",
)  # fmt: skip
MAX_OVERRIDES = 16
MAX_OVERRIDE_ITEMS = 64

OVERRIDE_VOLUME_RULE = "must not name a volume the operator mounts: " + ", ".join(OPERATOR_VOLUMES)
OVERRIDE_ENV_RULE = (
    "must not name an environment variable the operator sets: "
    + ", ".join(OPERATOR_ENV)
    + f" or any {OPERATOR_ENV_PREFIX}* (the hub token: spec.model.tokenSecret)"
)
OVERRIDE_LABEL_RULE = "must not set a label the operator or the Job controller owns: " + ", ".join(
    [f"{p}*" for p in RESERVED_LABEL_PREFIXES] + list(RESERVED_LABELS)
)
OVERRIDE_ANNOTATION_RULE = (
    f"must not set an annotation under {RESERVED_ANNOTATION_PREFIX} (the operator's)"
)
OVERRIDE_MOUNT_APART_RULE = (
    "a volumeMount's mountPath must not be, lie inside or contain data.mountPath or "
    "output.mountPath"
)
ENV_SOURCE_RULE = "valueFrom needs exactly one of secretKeyRef, configMapKeyRef, fieldRef, "
ENV_SOURCE_RULE += "resourceFieldRef"
ENV_VALUE_RULE = "value and valueFrom exclude each other"
ENV_FROM_RULE = "envFrom needs exactly one of configMapRef, secretRef"
SUB_PATH_RULE = "must name a folder of the volume: relative, not the volume itself, no '..'"

#: A DNS-1123 label (a volume's name) and subdomain (a Secret's, a ConfigMap's, an SA's).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: An environment variable's name as every Kubernetes version takes it (C_IDENTIFIER, '-', '.').
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
#: A key of a Secret or a ConfigMap.
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
#: A label's value, and a label's or annotation's name (after an optional DNS prefix and '/').
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
METADATA_KEY_PATTERN = rf"^({DNS_SUBDOMAIN_PATTERN[1:-1]}/)?{_QUALIFIED_NAME}$"

VolumeName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]


def _metadata_keys(what: str) -> AfterValidator:
    """A map's keys are qualified names (the API server would refuse the Job otherwise)."""

    def check(value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            name = key.rpartition("/")[2]
            if len(key) > 253 + 1 + 63 or len(name) > 63 or not re.match(METADATA_KEY_PATTERN, key):
                raise ValueError(
                    f"{what} key {key!r} is no qualified name ([prefix/]name: a DNS subdomain, "
                    "'/', then at most 63 letters, digits, '-', '_' or '.')"
                )
        return value

    return AfterValidator(check)


def _no_reserved_labels(value: dict[str, str] | None) -> dict[str, str] | None:
    for key in value or {}:
        if key in RESERVED_LABELS or key.startswith(RESERVED_LABEL_PREFIXES):
            raise ValueError(f"{OVERRIDE_LABEL_RULE} (got {key!r})")
    return value


def _no_reserved_annotations(value: dict[str, str] | None) -> dict[str, str] | None:
    for key in value or {}:
        if key.startswith(RESERVED_ANNOTATION_PREFIX):
            raise ValueError(f"{OVERRIDE_ANNOTATION_RULE} (got {key!r})")
    return value


def _not_an_operator_volume(name: str) -> str:
    if name in OPERATOR_VOLUMES:
        raise ValueError(f"{OVERRIDE_VOLUME_RULE} (got {name!r})")
    return name


def _not_operator_env(name: str) -> str:
    if name in OPERATOR_ENV or name.startswith(OPERATOR_ENV_PREFIX):
        raise ValueError(f"{OVERRIDE_ENV_RULE} (got {name!r})")
    return name


def _sub_path(path: str | None) -> str | None:
    if path is not None and (
        path.startswith("/") or re.search(PARENT_SEGMENT, path) or re.match(VOLUME_ITSELF, path)
    ):
        raise ValueError(f"{SUB_PATH_RULE} (got {path!r})")
    return path


def _unique(attribute: str, key: str = "name") -> AfterValidator:
    """A list keyed by `key` (x-kubernetes-list-type map: the API server refuses a repeat)."""

    def check(items: list[Any] | None) -> list[Any] | None:
        seen: set[str] = set()
        for item in items or []:
            value = getattr(item, attribute)
            if value in seen:
                raise ValueError(f"{value!r} is listed twice (each {key} once)")
            seen.add(value)
        return items

    return AfterValidator(check)


def _list_map(*keys: str) -> JsonDict:
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def _cel_none_of(expr: str, names: tuple[str, ...]) -> str:
    return f"!({expr} in [{', '.join(repr(n) for n in names)}])"


#: An object whose schema Kubernetes owns (a volume source, a node affinity), kept as written.
FreeObject = Annotated[
    dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
]


Labels = Annotated[
    dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]],
    Field(max_length=MAX_OVERRIDE_ITEMS),
    _metadata_keys("label"),
    AfterValidator(_no_reserved_labels),
]
Annotations = Annotated[
    dict[str, Annotated[str, Field(max_length=64 * 1024)]],
    Field(max_length=MAX_OVERRIDE_ITEMS),
    _metadata_keys("annotation"),
    AfterValidator(_no_reserved_annotations),
]


class TargetJob(ApiModel):
    name: StageName = Field(description="A stage: its Job, or each trial's Job for trials.")


class PodMetadataOverride(ApiModel):
    """Merged into the pod template's labels and annotations, key by key (later wins)."""

    labels: Labels | None = Field(
        default=None,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.all(k, "
                    + " && ".join(f"!k.startsWith('{p}')" for p in RESERVED_LABEL_PREFIXES)
                    + " && "
                    + _cel_none_of("k", RESERVED_LABELS)
                    + ")",
                    OVERRIDE_LABEL_RULE,
                )
            ]
        },
    )
    annotations: Annotations | None = Field(
        default=None,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.all(k, !k.startsWith('{RESERVED_ANNOTATION_PREFIX}'))",
                    OVERRIDE_ANNOTATION_RULE,
                )
            ]
        },
    )


class KeySelector(ApiModel):
    """A key of a Secret (secretKeyRef) or a ConfigMap (configMapKeyRef)."""

    name: ObjectName
    key: str = Field(min_length=1, max_length=253, pattern=CONFIG_KEY_PATTERN)
    optional: bool | None = None


class ObjectFieldSelector(ApiModel):
    field_path: str = Field(min_length=1, max_length=256)
    api_version: str | None = Field(default=None, max_length=64)


class ResourceFieldSelector(ApiModel):
    resource: str = Field(min_length=1, max_length=64)
    container_name: str | None = Field(default=None, max_length=63)
    divisor: Quantity | None = None


class EnvVarSource(ApiModel):
    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    " + ".join(
                        f"(has(self.{f}) ? 1 : 0)"
                        for f in ("secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef")
                    )
                    + " == 1",
                    ENV_SOURCE_RULE,
                )
            ]
        }
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        sources = (
            self.secret_key_ref,
            self.config_map_key_ref,
            self.field_ref,
            self.resource_field_ref,
        )
        if sum(source is not None for source in sources) != 1:
            raise ValueError(ENV_SOURCE_RULE)
        return self


class EnvVar(ApiModel):
    """One variable of the trainer container, merged by name (later wins)."""

    name: Annotated[
        str,
        Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN),
        AfterValidator(_not_operator_env),
    ]
    value: str | None = Field(default=None, max_length=64 * 1024)
    value_from: EnvVarSource | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"!self.name.startsWith('{OPERATOR_ENV_PREFIX}') && "
                    + _cel_none_of("self.name", OPERATOR_ENV),
                    OVERRIDE_ENV_RULE,
                    ".name",
                ),
                cel("!(has(self.value) && has(self.valueFrom))", ENV_VALUE_RULE),
            ]
        }
    )

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(ENV_VALUE_RULE)
        return self


class EnvSourceRef(ApiModel):
    """A whole Secret (secretRef) or ConfigMap (configMapRef) as variables."""

    name: ObjectName
    optional: bool | None = None


class EnvFromSource(ApiModel):
    """Appended to the trainer container's envFrom (the operator's own env, set explicitly,
    takes precedence over it, as Kubernetes reads env over envFrom)."""

    prefix: str | None = Field(default=None, max_length=256, pattern=ENV_NAME_PATTERN)
    config_map_ref: EnvSourceRef | None = None
    secret_ref: EnvSourceRef | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.configMapRef) != has(self.secretRef)", ENV_FROM_RULE)
            ]
        }
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvFromSource:
        if (self.config_map_ref is None) == (self.secret_ref is None):
            raise ValueError(ENV_FROM_RULE)
        return self


class VolumeMount(ApiModel):
    """A mount of an override's volume into the trainer container, merged by mountPath."""

    name: Annotated[VolumeName, AfterValidator(_not_an_operator_volume)]
    mount_path: Annotated[str, AfterValidator(_free_mount)] = Field(
        pattern=MOUNT_PATH_PATTERN, max_length=256
    )
    read_only: bool | None = None
    sub_path: Annotated[str | None, AfterValidator(_sub_path)] = Field(
        default=None,
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description="A folder of the volume to mount instead of its root: relative, no '..'.",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(_cel_none_of("self.name", OPERATOR_VOLUMES), OVERRIDE_VOLUME_RULE, ".name"),
                cel(cel_mount_path_free("self.mountPath"), MOUNT_RESERVED_RULE, ".mountPath"),
                cel(
                    "!has(self.subPath) || (!self.subPath.startsWith('/') && "
                    f"!self.subPath.matches('{PARENT_SEGMENT}') && "
                    f"!self.subPath.matches('{VOLUME_ITSELF}'))",
                    SUB_PATH_RULE,
                    ".subPath",
                ),
            ]
        }
    )


def _volume_schema(schema: JsonDict) -> None:
    """A volume's source is Kubernetes' (one of VOLUME_SOURCES), kept as written."""
    schema.pop("additionalProperties", None)
    schema["x-kubernetes-preserve-unknown-fields"] = True
    schema["x-kubernetes-validations"] = [
        cel(_cel_none_of("self.name", OPERATOR_VOLUMES), OVERRIDE_VOLUME_RULE, ".name")
    ]


class Volume(ApiModel):
    """A pod volume: `name` and one Kubernetes volume source (persistentVolumeClaim, secret,
    configMap, emptyDir, csi, ...), merged by name (later wins)."""

    name: Annotated[VolumeName, AfterValidator(_not_an_operator_volume)]

    model_config = ConfigDict(extra="allow", json_schema_extra=_volume_schema)

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        sources = dict(self.model_extra or {})
        unknown = sorted(set(sources) - set(VOLUME_SOURCES))
        if unknown:
            raise ValueError(
                f"volume {self.name!r}: {', '.join(map(repr, unknown))} is no volume source "
                f"(one of {', '.join(VOLUME_SOURCES)})"
            )
        if len(sources) != 1 or not isinstance(next(iter(sources.values())), dict):
            raise ValueError(f"volume {self.name!r} needs exactly one volume source, an object")
        return self


class Affinity(ApiModel):
    """Replaces the pod's affinity as a whole (Kubeflow: `affinity` is replaced)."""

    node_affinity: FreeObject | None = None
    pod_affinity: FreeObject | None = None
    pod_anti_affinity: FreeObject | None = None


class LocalObjectReference(ApiModel):
    name: ObjectName


class ContainerOverride(ApiModel):
    name: Literal["trainer"] = Field(description="The stage pod's one container.")
    env: Annotated[list[EnvVar] | None, _unique("name")] = Field(
        default=None, max_length=MAX_OVERRIDE_ITEMS * 2, json_schema_extra=_list_map("name")
    )
    env_from: list[EnvFromSource] | None = Field(default=None, max_length=MAX_OVERRIDE_ITEMS)
    volume_mounts: Annotated[list[VolumeMount] | None, _unique("mount_path", "mountPath")] = Field(
        default=None, max_length=MAX_OVERRIDE_ITEMS, json_schema_extra=_list_map("mountPath")
    )


class PodSpecOverride(ApiModel):
    service_account_name: ObjectName | None = Field(
        default=None, description="Replaces resources.serviceAccountName."
    )
    node_selector: dict[str, str] | None = Field(
        default=None,
        max_length=MAX_OVERRIDE_ITEMS,
        description="Merged into resources.nodeSelector, key by key.",
    )
    affinity: Affinity | None = None
    tolerations: list[Toleration] | None = Field(
        default=None,
        max_length=MAX_OVERRIDE_ITEMS,
        description="Appended to resources.tolerations (one already there is not repeated).",
    )
    volumes: Annotated[list[Volume] | None, _unique("name")] = Field(
        default=None, max_length=MAX_OVERRIDE_ITEMS, json_schema_extra=_list_map("name")
    )
    containers: Annotated[list[ContainerOverride] | None, _unique("name")] = Field(
        default=None, max_length=1, json_schema_extra=_list_map("name")
    )
    image_pull_secrets: Annotated[list[LocalObjectReference] | None, _unique("name")] = Field(
        default=None, max_length=MAX_OVERRIDE_ITEMS, json_schema_extra=_list_map("name")
    )


class PodTemplateOverride(ApiModel):
    """One overlay of the stage pods, as Kubeflow Trainer's TrainJob podTemplateOverrides
    entry: applied in list order to the stages of targetJobs (every stage when absent),
    later entries winning. Merged as Kubeflow merges (a strategic merge of the pod template):
    labels, annotations and nodeSelector key by key; volumes, env and imagePullSecrets by
    name; volumeMounts by mountPath; serviceAccountName and affinity replaced. Two
    departures, both toward keeping what the spec already says: tolerations are appended
    to resources.tolerations (Kubeflow replaces the list) and envFrom, which Kubeflow's
    container override lacks, is appended."""

    target_jobs: Annotated[list[TargetJob] | None, _unique("name")] = Field(
        default=None,
        min_length=1,
        max_length=len(get_args(StageName)),
        description="The stages whose pods this applies to; every stage when absent.",
        json_schema_extra=_list_map("name"),
    )
    metadata: PodMetadataOverride | None = None
    spec: PodSpecOverride | None = None


def override_targets(override: PodTemplateOverride, stage: str) -> bool:
    """`override` applies to the pods of `stage`."""
    return override.target_jobs is None or any(t.name == stage for t in override.target_jobs)


#: A clean share means something only next to augmented copies of that clean source.
CLEAN_SHARE_RULE = (
    "training.cleanSourceShare needs augmentation.enabled and augmentation.keepOriginal"
)


class AsrAdaptationSpec(ApiModel):
    model: ModelSpec
    data: DataSpec
    filter: FilterSpec = Field(default_factory=FilterSpec)
    profile: ProfileSpec = Field(default_factory=ProfileSpec)
    augmentation: AugmentationSpec = Field(default_factory=AugmentationSpec)
    baseline: BaselineSpec = Field(default_factory=BaselineSpec)
    trials: TrialsSpec = Field(default_factory=TrialsSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    decoding: DecodingSpec = Field(
        default_factory=DecodingSpec,
        description="How baseline, the validation WER of training and evaluate decode: one "
        "policy, so that WER0, the cycle WERs and the final WER are comparable.",
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    pod_template_overrides: list[PodTemplateOverride] | None = Field(
        default=None,
        max_length=MAX_OVERRIDES,
        description="Overlays of the stage pods (labels, annotations, env, envFrom, volumes "
        "and mounts, imagePullSecrets, affinity, tolerations, nodeSelector, "
        "serviceAccountName), shaped and merged as Kubeflow Trainer's podTemplateOverrides: "
        "applied in order to the stages of targetJobs (all when absent), later entries "
        "winning. Immutable once the run started.",
    )
    queue_name: Annotated[str | None, AfterValidator(_queue_name)] = Field(
        default=None,
        # In the CRD's schema only: here _queue_name refuses with a message naming the rule.
        json_schema_extra={"pattern": QUEUE_NAME_PATTERN, "maxLength": MAX_QUEUE_NAME_LENGTH},
        description="Kueue LocalQueue of every stage Job (label kueue.x-k8s.io/queue-name; "
        "created suspended, Kueue admits them). Default: the operator's "
        "(chart value kueue.defaultQueueName); none: Jobs start at once, without Kueue.",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.podTemplateOverrides) || self.podTemplateOverrides.all(o, "
                    "!has(o.spec) || !has(o.spec.containers) || o.spec.containers.all(c, "
                    "!has(c.volumeMounts) || c.volumeMounts.all(m, "
                    + cel_mounts_apart("m.mountPath", "self.data.mountPath")
                    + " && "
                    + cel_mounts_apart("m.mountPath", "self.output.mountPath")
                    + ")))",
                    OVERRIDE_MOUNT_APART_RULE,
                    ".podTemplateOverrides",
                ),
                cel(
                    "!has(self.queueName) || !has(self.resources) || "
                    "!has(self.resources.gangScheduling)",
                    GANG_QUEUE_RULE,
                    ".queueName",
                ),
                cel(
                    "!self.profile.enabled || has(self.data.targetAudio)",
                    "profile.enabled needs data.targetAudio",
                ),
                cel(
                    "!self.augmentation.enabled || self.augmentation.preset != 'profile' "
                    "|| self.profile.enabled",
                    "augmentation.preset 'profile' needs profile.enabled",
                ),
                cel(
                    "!self.evaluation.enabled || has(self.data.test)",
                    "evaluation.enabled needs data.test",
                ),
                cel(
                    "!has(self.trials.learningRates) || !has(self.training.learningRate) || "
                    "self.trials.learningRates.all(lr, lr >= self.training.learningRate.min && "
                    "lr <= self.training.learningRate.max)",
                    TRIAL_LRS_OUTSIDE,
                ),
                cel(
                    "!has(self.training.cleanSourceShare) || "
                    "(self.augmentation.enabled && self.augmentation.keepOriginal)",
                    CLEAN_SHARE_RULE,
                ),
                cel(
                    cel_model_source("self.model.source", "self.data.mountPath"),
                    MODEL_SOURCE_RULE,
                    ".model.source",
                ),
                cel(
                    "!has(self.model.revision) || !self.model.source.startsWith('/')",
                    REVISION_RULE,
                    ".model.revision",
                ),
                cel(
                    cel_mounts_apart("self.data.mountPath", "self.output.mountPath"),
                    MOUNTS_APART_RULE,
                    ".output.mountPath",
                ),
                *(
                    cel(
                        f"!has(self.augmentation.{name}) || "
                        + cel_inside_data_volume(
                            f"self.augmentation.{name}", "self.data.mountPath"
                        ),
                        f"augmentation.{name} {DATA_PATH_RULE}",
                        f".augmentation.{name}",
                    )
                    for name in ("rirPath", "noisePath")
                ),
            ]
        }
    )

    @model_validator(mode="after")
    def _paths_on_the_data_volume(self) -> AsrAdaptationSpec:
        """The paths outside the data section, against its mountPath."""
        mount = self.data.mount_path
        problem = model_source_problem(self.model.source, mount)
        if problem:
            raise ValueError(f"{MODEL_SOURCE_RULE} ({problem})")
        if self.model.revision is not None and self.model.source.startswith("/"):
            raise ValueError(REVISION_RULE)
        for name, path in (
            ("rirPath", self.augmentation.rir_path),
            ("noisePath", self.augmentation.noise_path),
        ):
            problem = data_path_problem(path, mount) if path is not None else None
            if problem:
                raise ValueError(f"augmentation.{name} {DATA_PATH_RULE} ({problem})")
        return self

    @model_validator(mode="after")
    def _mounts_apart(self) -> AsrAdaptationSpec:
        data, output = self.data.mount_path, self.output.mount_path
        if mounts_overlap(data, output):
            raise ValueError(f"{MOUNTS_APART_RULE} (data {data!r}, output {output!r})")
        return self

    @field_validator("pod_template_overrides")
    @classmethod
    def _overrides_fit_the_pods(
        cls, overrides: list[PodTemplateOverride] | None, info: ValidationInfo
    ) -> list[PodTemplateOverride] | None:
        """An override's mounts stay off the data and output mounts (declared before it,
        read from info.data when they passed their own checks), and each names a volume
        that the pods of every stage it reaches have (this one is Python's alone: without
        it the API server would refuse the Job, after the stages before it ran)."""
        mounts_apart = [
            (section, info.data[section].mount_path)
            for section in ("data", "output")
            if section in info.data
        ]
        for where, mount in _override_mounts(overrides or []):
            for section, path in mounts_apart:
                if mounts_overlap(mount.mount_path, path):
                    raise ValueError(
                        f"{OVERRIDE_MOUNT_APART_RULE} ({where}.mountPath {mount.mount_path!r} "
                        f"overlaps {section}.mountPath {path!r})"
                    )
        for stage in get_args(StageName):
            reaching = [(i, o) for i, o in enumerate(overrides or []) if override_targets(o, stage)]
            volumes = {v.name for _, o in reaching if o.spec for v in o.spec.volumes or []}
            last: dict[str, tuple[str, VolumeMount]] = {}  # by mountPath: later entries win
            for i, override in reaching:
                for where, mount in _override_mounts([override], first=i):
                    last[mount.mount_path] = (where, mount)
            for where, mount in last.values():
                if mount.name not in volumes:
                    raise ValueError(
                        f"{where}.name {mount.name!r} names no volume of the {stage} pods: "
                        f"add it to spec.volumes of an override that reaches {stage}"
                    )
        return overrides

    @model_validator(mode="after")
    def _gang_without_queue(self) -> AsrAdaptationSpec:
        """The spec's own queue; the operator's default one is core's to refuse."""
        problem = gang_queue_problem(self, self.queue_name)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _stages_have_inputs(self) -> AsrAdaptationSpec:
        if self.profile.enabled and not self.data.target_audio:
            raise ValueError("profile.enabled needs data.targetAudio")
        augmentation = self.augmentation
        if augmentation.enabled and augmentation.preset == "profile" and not self.profile.enabled:
            raise ValueError("augmentation.preset 'profile' needs profile.enabled")
        if self.evaluation.enabled and not self.data.test:
            raise ValueError("evaluation.enabled needs data.test")
        bounds, candidates = self.training.learning_rate, self.trials.learning_rates
        if bounds and candidates and not all(bounds.min <= lr <= bounds.max for lr in candidates):
            raise ValueError(TRIAL_LRS_OUTSIDE)
        if self.training.clean_source_share is not None and not (
            augmentation.enabled and augmentation.keep_original
        ):
            raise ValueError(CLEAN_SHARE_RULE)
        return self


def _override_mounts(
    overrides: list[PodTemplateOverride], first: int = 0
) -> list[tuple[str, VolumeMount]]:
    """Every volumeMount of `overrides`, with where it is written (the first is entry `first`)."""
    found = []
    for i, override in enumerate(overrides, start=first):
        for j, container in enumerate(override.spec.containers or [] if override.spec else []):
            for k, mount in enumerate(container.volume_mounts or []):
                where = f"podTemplateOverrides[{i}].spec.containers[{j}].volumeMounts[{k}]"
                found.append((where, mount))
    return found


def field_path(error: ValidationError, prefix: str = "spec") -> str:
    """The camelCase path of a validation error's first field, e.g. spec.training.maxSteps."""
    loc = error.errors()[0]["loc"]
    parts = [prefix]
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else str(item))
    return ".".join(parts).replace(".[", "[")


def describe_error(error: ValidationError, prefix: str = "spec") -> str:
    first = error.errors()[0]
    return f"{field_path(error, prefix)}: {first['msg'].removeprefix('Value error, ')}"


def parse_spec(spec: dict[str, Any]) -> AsrAdaptationSpec:
    """Parse a CR's spec; raises ValidationError (use describe_error for the message).

    Strictly, as the CRD's schema reads it: "5" is no integer, 5.0 none either, "true"
    no boolean (pydantic's lax mode would convert them, the API server refuses them)."""
    return AsrAdaptationSpec.model_validate(spec, strict=True)


# --- edits after the start ----------------------------------------------------------------

#: The spec fields that may change once the run started (status.startedGeneration set):
#: where and how its pods are scheduled and sized, never what a stage computes or where it
#: reads and writes. An edit applies to the Jobs created after it (a later stage, a retried
#: one); a Job already created keeps what it was made with. The rest of the spec is
#: immutable from the start on (the CRD's transition rule, FROZEN_SPEC_RULE), as Katib
#: freezes a started Experiment's spec: a run is one spec's result. To change it, delete
#: the adaptation and create it again (its children are never adopted: ownership.py).
#: spec.podTemplateOverrides is frozen with the rest (Kubeflow Trainer's webhook too refuses
#: them while a TrainJob runs): its env and volumes change what a stage reads, so a retried
#: or later stage would run in another pod than the stages before it; its scheduling fields
#: have mutable twins in resources (nodeSelector, tolerations, serviceAccountName).
MUTABLE_AFTER_START: tuple[str, ...] = (
    "queueName",
    "resources.cpu",
    "resources.memory",
    "resources.gpuMemory",
    "resources.sharedMemory",
    "resources.nodeSelector",
    "resources.tolerations",
    "resources.priorityClassName",
    "resources.serviceAccountName",
    "resources.imagePullPolicy",
    "resources.backoffLimit",
    "resources.maxRestarts",
    "resources.stageDeadlineSeconds",
)
FROZEN_SPEC_MESSAGE = (
    "the spec of a started run is immutable (status.startedGeneration is set), except "
    + ", ".join(f"spec.{path}" for path in MUTABLE_AFTER_START)
    + "; to change the rest, delete the AsrAdaptation and create it again"
)


def frozen_fields() -> list[str]:
    """The spec's immutable fields after the start, as camelCase paths (`model`,
    `resources.image`): every field but MUTABLE_AFTER_START, at the depth they are named."""
    mutable_parents = {path.split(".")[0] for path in MUTABLE_AFTER_START}
    paths = []
    for name, info in AsrAdaptationSpec.model_fields.items():
        alias = info.alias or name
        if alias in MUTABLE_AFTER_START:
            continue  # a top-level field that may change (queueName)
        if alias not in mutable_parents:
            paths.append(alias)
            continue
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel), alias
        for child, child_info in model.model_fields.items():
            path = f"{alias}.{child_info.alias or child}"
            if path not in MUTABLE_AFTER_START:
                paths.append(path)
    return paths


def _cel_same(path: str) -> str:
    new, old = f"self.spec.{path}", f"oldSelf.spec.{path}"
    parent, _, leaf = path.rpartition(".")
    has_new = f"has(self.spec{'.' + parent if parent else ''}.{leaf})"
    has_old = f"has(oldSelf.spec{'.' + parent if parent else ''}.{leaf})"
    return f"({has_new} ? {has_old} && {new} == {old} : !{has_old})"


def frozen_spec_rule() -> str:
    """CEL, at the object's root (it reads the old status): an update keeps every frozen
    field once the run started."""
    same = " && ".join(_cel_same(path) for path in frozen_fields())
    return f"!has(oldSelf.status) || !has(oldSelf.status.startedGeneration) || ({same})"


def frozen_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The frozen fields (`spec.data`, `spec.resources.image`) that differ between two
    specs, each read with its defaults: what the CRD's rule refuses after the start."""
    return _differing(old, new, frozen_fields())


def spec_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every field that differs between two specs read with their defaults, frozen or not,
    at the depth frozen_fields and MUTABLE_AFTER_START name them (`spec.training`,
    `spec.resources.cpu`); empty when the two are the same spec."""
    paths = sorted([*frozen_fields(), *MUTABLE_AFTER_START])
    return _differing(old, new, paths)


def _differing(old: dict[str, Any], new: dict[str, Any], paths: list[str]) -> list[str]:
    before = parse_spec(old).model_dump(by_alias=True, mode="json")
    after = parse_spec(new).model_dump(by_alias=True, mode="json")
    changed = []
    for path in paths:
        a: Any = before
        b: Any = after
        for part in path.split("."):
            a, b = a.get(part), b.get(part)
        if a != b:
            changed.append(f"spec.{path}")
    return changed
