"""`marco-trainer fetch` and `marco-trainer push`: the only stages that go online.

fetch runs first, when the spec names something remote: the hub model
(huggingface_hub's snapshot_download, into a folder every later stage loads) and
the data sources (fsspec: s3://, gs://, hf:// — the hub's HfFileSystem — and, for
tests and hand runs, any other fsspec URL such as memory:// or file://), each
copied into its folder on the data volume. Every later stage runs offline
(HF_HUB_OFFLINE, plan.stage_env) and reads the copies.

push runs last, when spec.output.push asks for it: the exported model folder to a
hub model repo (HfApi.upload_folder, one commit) or to a folder of an object store
(fsspec put, file by file). Its result message says where it went (the commit).

The hub token comes from the environment (HF_TOKEN, a Secret in a pod); nothing
here prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from marco_contract.layout import FETCHED_MODEL_DIR, FETCHED_MODEL_FILE

#: In a data source's folder: which URL it was copied from. A folder with it may be
#: replaced by the next fetch (a retried stage); one without it is the user's, and kept.
FETCH_MARKER = ".marco-fetch.json"
#: The fsspec implementation each object store scheme needs (for the error that names it).
SCHEME_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}


class RemoteError(Exception):
    """A remote source or target that cannot be used: the message says which and why."""


class FetchedModel(BaseModel):
    """What the fetch stage downloaded for model.source (FETCHED_MODEL_FILE)."""

    repo_id: str
    revision: str | None = None
    commit: str | None = None


class HubApi(Protocol):
    """The part of huggingface_hub.HfApi these stages use (a test passes a fake)."""

    def model_info(self, repo_id: str, *, revision: str | None = None) -> Any: ...

    def snapshot_download(
        self, repo_id: str, *, revision: str | None = None, local_dir: str | None = None
    ) -> str: ...

    def create_repo(
        self, repo_id: str, *, private: bool | None = None, exist_ok: bool = False
    ) -> Any: ...

    def upload_folder(self, *, repo_id: str, folder_path: str, commit_message: str) -> Any: ...


def hub_api() -> HubApi:
    from huggingface_hub import HfApi

    return HfApi()  # reads HF_TOKEN and HF_ENDPOINT from the environment


# --------------------------------------------------------------------- filesystems


def filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``uri`` and the path in it; RemoteError naming the package
    a scheme needs when this environment has none (the trainer image installs s3fs and
    gcsfs: the `cloud` extra; an image built without it says so here)."""
    import fsspec

    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError as error:
        package = SCHEME_PACKAGES.get(scheme)
        fix = (
            f"{package} in the trainer image (pip install {package})"
            if package
            else (f"fsspec's implementation of {scheme}:// in the trainer image")
        )
        raise RemoteError(
            f"{uri}: no filesystem for {scheme}:// in this environment: install {fix} ({error})"
        ) from error
    except ValueError as error:  # fsspec's "Protocol not known"
        raise RemoteError(f"{uri}: {scheme}:// is no known filesystem ({error})") from error
    return fs, str(path).rstrip("/") or "/"


def _files(fs: Any, root: str, uri: str) -> list[tuple[str, str]]:
    """(remote file, its path relative to the copy) of everything at ``root``."""
    try:
        if fs.isdir(root):
            found = sorted(fs.find(root))
            return [(path, posixpath.relpath(path, root)) for path in found]
        if fs.isfile(root):
            return [(root, posixpath.basename(root))]
    except FileNotFoundError:
        pass
    raise RemoteError(f"{uri}: no such file or folder")


@contextmanager
def _hub_errors(repo_id: str) -> Iterator[None]:
    """The hub client's HTTP and connection errors as a RemoteError naming the repo, in
    one line (its first: the status and the reason; the rest is the request's ids)."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        yield
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RemoteError(f"{repo_id}: {first}") from error


# --------------------------------------------------------------------------- fetch


def fetch_tree(uri: str, dest: str | Path, data_root: str | Path | None = None) -> int:
    """Copy the file or folder at ``uri`` into the folder ``dest``; the number of files.

    A folder's contents land in ``dest`` (its tree kept), a file keeps its name in it.
    The copy is made beside ``dest`` and renamed into place once whole, so a fetch cut
    short leaves no half folder that a later stage would read as the data. A ``dest``
    that exists is replaced only if a fetch wrote it (FETCH_MARKER): anything else
    there is the user's, and refused.
    """
    dest = Path(dest)
    if data_root is not None:
        root = Path(os.path.realpath(data_root))
        if not Path(os.path.realpath(dest)).is_relative_to(root):
            raise RemoteError(f"{uri}: {dest} resolves outside the data volume {root}")
    if dest.exists() and not (dest / FETCH_MARKER).is_file():
        raise RemoteError(
            f"{uri}: {dest} exists and no fetch wrote it; remove it or copy into another "
            "data.sources[].path"
        )
    fs, path = filesystem(uri)
    files = _files(fs, path, uri)
    staging = dest.with_name(f".{dest.name}.fetching")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for remote, relative in files:
        local = staging / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(local))
    (staging / FETCH_MARKER).write_text(json.dumps({"uri": uri}) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return len(files)


def fetch_model(
    api: HubApi, repo_id: str, revision: str | None, model_dir: str | Path
) -> FetchedModel:
    """Download the hub model ``repo_id`` at ``revision`` into ``model_dir``, pinned to the
    commit the revision names now (so that every file is of one commit), and record it
    beside the folder (FETCHED_MODEL_FILE)."""
    model_dir = Path(model_dir)
    with _hub_errors(repo_id):
        info = api.model_info(repo_id, revision=revision)
        commit = getattr(info, "sha", None)
        api.snapshot_download(repo_id, revision=commit or revision, local_dir=str(model_dir))
    fetched = FetchedModel(repo_id=repo_id, revision=revision, commit=commit)
    record = model_dir.parent / FETCHED_MODEL_FILE
    record.write_text(fetched.model_dump_json(indent=2))
    return fetched


def model_name(model: str | Path) -> str:
    """What a model folder is called in a model card: the hub id when the fetch stage
    downloaded it (its record beside it), the path otherwise."""
    path = Path(model)
    record = path.parent / FETCHED_MODEL_FILE
    if path.name == FETCHED_MODEL_DIR and record.is_file():
        return FetchedModel.model_validate_json(record.read_text()).repo_id
    return str(model)


def run_fetch(args: argparse.Namespace, api: HubApi | None = None) -> int:
    from marco_contract.formats import StageResult
    from marco_contract.results import write_stage_result

    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    said: list[str] = []
    files = 0
    try:
        if args.model:
            fetched = fetch_model(api or hub_api(), args.model, args.revision, args.model_dir)
            at = f"@{fetched.commit}" if fetched.commit else ""
            said.append(f"model {fetched.repo_id}{at}")
        for uri, dest in args.source or []:
            count = fetch_tree(uri, dest, args.data_root)
            files += count
            said.append(f"{uri} → {dest} ({count} files)")
    except RemoteError as error:
        raise SystemExit(f"marco-trainer fetch: {error}") from error
    message = "fetched " + "; ".join(said) if said else "nothing to fetch"
    print(message, flush=True)
    write_stage_result(StageResult(stage="fetch", counts={"files": files}, message=message), output)
    return 0


# ---------------------------------------------------------------------------- push


def push_to_store(model_dir: str | Path, uri: str) -> int:
    """Put every file of ``model_dir`` under the folder ``uri`` (fsspec); the number put."""
    model_dir = Path(model_dir)
    fs, root = filesystem(uri)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    for local in files:
        target = posixpath.join(root, local.relative_to(model_dir).as_posix())
        fs.makedirs(posixpath.dirname(target), exist_ok=True)
        fs.put_file(str(local), target)
    return len(files)


def push_to_hub(
    api: HubApi, model_dir: str | Path, repo_id: str, *, private: bool, commit_message: str
) -> str:
    """Upload ``model_dir`` to the hub model repo ``repo_id`` (created if missing) as one
    commit; the commit's URL."""
    with _hub_errors(repo_id):
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(model_dir), commit_message=commit_message
        )
    return str(getattr(commit, "commit_url", None) or getattr(commit, "oid", commit))


def run_push(args: argparse.Namespace, api: HubApi | None = None) -> int:
    from marco_contract.formats import StageResult
    from marco_contract.results import write_stage_result

    model = Path(args.model)
    if not model.is_dir() or not any(model.iterdir()):
        raise SystemExit(f"marco-trainer push: --model {model}: no exported model there")
    try:
        if args.to.startswith("hf://"):
            repo_id = args.to.removeprefix("hf://")
            url = push_to_hub(
                api or hub_api(),
                model,
                repo_id,
                private=args.private,
                commit_message=args.commit_message,
            )
            message = f"pushed to {args.to}: {url}"
            counts: dict[str, int] = {}
        else:
            count = push_to_store(model, args.to)
            message = f"pushed {count} files to {args.to}"
            counts = {"files": count}
    except RemoteError as error:
        raise SystemExit(f"marco-trainer push: {error}") from error
    print(message, flush=True)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    write_stage_result(StageResult(stage="push", counts=counts, message=message), output)
    return 0


# ------------------------------------------------------------------------------ CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    from marco_contract.argv import add_arguments
    from marco_contract.options import VolumeOptions

    fetch = subparsers.add_parser(
        "fetch", help="download the hub model and remote data sources onto the volumes"
    )
    fetch.add_argument("--output-dir", required=True)
    fetch.add_argument("--model", help="hub id to download (model.source)")
    fetch.add_argument("--model-dir", help="folder the model is downloaded into")
    fetch.add_argument("--revision", help="hub branch, tag or commit (model.revision)")
    fetch.add_argument(
        "--source",
        nargs=2,
        action="append",
        metavar=("URI", "DIR"),
        help="copy the file or folder at URI into the folder DIR (repeatable)",
    )
    add_arguments(fetch, VolumeOptions)
    fetch.set_defaults(func=_fetch_main)

    push = subparsers.add_parser("push", help="upload the exported model (spec.output.push)")
    push.add_argument("--model", required=True, help="the exported model folder")
    push.add_argument("--to", required=True, help="hf://org/name or an fsspec folder URL")
    push.add_argument("--output-dir", required=True)
    push.add_argument("--commit-message", default="marco-asr: adapted model")
    visibility = push.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=True)
    visibility.add_argument("--public", dest="private", action="store_false")
    add_arguments(push, VolumeOptions)
    push.set_defaults(func=run_push)


def _fetch_main(args: argparse.Namespace) -> int:
    if bool(args.model) != bool(args.model_dir):
        raise SystemExit("marco-trainer fetch: --model and --model-dir go together")
    return run_fetch(args)
