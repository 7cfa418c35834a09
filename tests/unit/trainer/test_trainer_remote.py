"""`marco-trainer fetch` and `push` without a network: fsspec's memory:// and file://
filesystems stand in for the object stores, and a fake at the HfApi boundary (the four
methods remote.HubApi names) for the hub. The hub client itself downloads from a local
stand-in hub in test_trainer_hub_fetch.py; its uploads are tested here only, and hf://
data (HfFileSystem) is not tested against a server."""

import importlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import fsspec
import pytest

from marco_contract.results import read_stage_result
from marco_trainer.cli import main
from marco_trainer.remote import (
    FETCH_MARKER,
    RemoteError,
    fetch_tree,
    filesystem,
    model_name,
    push_to_store,
    run_fetch,
    run_push,
)

CORPUS = {
    "train.jsonl": b'{"audio": "audio/a.wav", "text": "hello"}\n',
    "audio/a.wav": b"RIFF....WAVE",
    "audio/deep/b.wav": b"RIFF..b.WAVE",
}


@pytest.fixture
def bucket():
    """A fresh memory:// folder holding CORPUS; removed afterwards (memory is process-wide)."""
    fs = fsspec.filesystem("memory")
    root = f"/bucket-{uuid.uuid4().hex}/corpus"
    for name, data in CORPUS.items():
        fs.pipe_file(f"{root}/{name}", data)
    yield fs, root
    fs.rm(root.rsplit("/", 1)[0], recursive=True)


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != FETCH_MARKER
    }


def test_a_folder_is_copied_with_its_tree_into_the_data_volume(tmp_path, bucket):
    _, root = bucket
    dest = tmp_path / "data" / "callcentre"
    count = fetch_tree(f"memory://{root}", dest, tmp_path / "data")
    assert count == len(CORPUS)
    assert tree(dest) == CORPUS
    assert json.loads((dest / FETCH_MARKER).read_text()) == {"uri": f"memory://{root}"}
    assert not list(dest.parent.glob(".*fetching"))  # the staging folder was renamed


def test_a_file_keeps_its_name_in_the_folder(tmp_path, bucket):
    _, root = bucket
    dest = tmp_path / "manifests"
    assert fetch_tree(f"memory://{root}/train.jsonl", dest) == 1
    assert tree(dest) == {"train.jsonl": CORPUS["train.jsonl"]}


def test_a_second_fetch_replaces_its_own_copy_whole(tmp_path, bucket):
    fs, root = bucket
    dest = tmp_path / "callcentre"
    fetch_tree(f"memory://{root}", dest)
    fs.rm(f"{root}/audio/deep/b.wav")
    fs.pipe_file(f"{root}/audio/c.wav", b"new")
    fetch_tree(f"memory://{root}", dest)
    expected = {k: v for k, v in CORPUS.items() if k != "audio/deep/b.wav"}
    assert tree(dest) == {**expected, "audio/c.wav": b"new"}


def test_a_folder_no_fetch_wrote_is_never_replaced(tmp_path, bucket):
    _, root = bucket
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(RemoteError, match="exists and no fetch wrote it"):
        fetch_tree(f"memory://{root}", dest)
    assert (dest / "notes.txt").read_text() == "keep me"


def test_a_copy_is_made_from_file_urls_too(tmp_path):
    source = tmp_path / "elsewhere"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "x.jsonl").write_text("{}\n")
    dest = tmp_path / "data" / "x"
    assert fetch_tree(f"file://{source}", dest, tmp_path / "data") == 1
    assert tree(dest) == {"sub/x.jsonl": b"{}\n"}


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("memory:///no-such-bucket/corpus", "memory:///no-such-bucket/corpus: no such file"),
        ("nosuch://bucket/x", "nosuch:// is no known filesystem"),
    ],
)
def test_a_bad_url_is_refused_naming_it(tmp_path, uri, message):
    with pytest.raises(RemoteError, match=message):
        fetch_tree(uri, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_scheme_without_its_package_names_the_package(tmp_path, monkeypatch):
    # As in an image without s3fs, whether or not this environment has it.
    registry = importlib.import_module("fsspec.registry")  # the module, not fsspec.registry
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    monkeypatch.setitem(
        registry.known_implementations,
        "s3",
        {"class": "marco_no_such_module.S3FileSystem", "err": "Install s3fs to access S3"},
    )
    with pytest.raises(RemoteError) as error:
        fetch_tree("s3://corpora/callcentre", tmp_path / "x")
    said = str(error.value)
    assert said.startswith("s3://corpora/callcentre: no filesystem for s3://")
    assert "install s3fs in the trainer image (pip install s3fs)" in said


def test_the_object_stores_of_the_trainer_image_are_installed():
    """The `cloud` extra (the trainer image's, and this environment's): s3:// and gs:// have
    their fsspec implementations. Nothing is reached: a filesystem connects on first use."""
    import fsspec

    fs, path = filesystem("s3://corpora/callcentre/")
    assert type(fs).__module__.split(".")[0] == "s3fs" and path == "corpora/callcentre"
    # gcsfs looks for credentials when made (a metadata server, off this machine): its class.
    assert fsspec.get_filesystem_class("gs").__module__.split(".")[0] == "gcsfs"


def test_a_destination_outside_the_data_volume_is_refused(tmp_path, bucket):
    _, root = bucket
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(RemoteError, match="outside the data volume"):
        fetch_tree(f"memory://{root}", tmp_path / "data" / "link" / "x", tmp_path / "data")


def test_the_fetch_command_writes_its_result(tmp_path, bucket):
    _, root = bucket
    out, data = tmp_path / "out" / "fetch", tmp_path / "data"
    data.mkdir()
    code = main(["fetch", "--output-dir", str(out), "--data-root", str(data),
                 "--output-root", str(tmp_path / "out"),
                 "--source", f"memory://{root}", str(data / "corpus")])  # fmt: skip
    assert code == 0
    result = read_stage_result(out)
    assert result is not None and result.counts == {"files": len(CORPUS)}
    assert result.message == f"fetched memory://{root} → {data / 'corpus'} ({len(CORPUS)} files)"
    assert tree(data / "corpus") == CORPUS


def test_the_fetch_command_fails_with_the_reason_as_its_last_word(tmp_path):
    with pytest.raises(SystemExit) as error:
        main(["fetch", "--output-dir", str(tmp_path / "o"),
              "--source", "memory:///absent-bucket/x", str(tmp_path / "x")])  # fmt: skip
    assert str(error.value) == (
        "marco-trainer fetch: memory:///absent-bucket/x: no such file or folder"
    )


# --- the hub, through a fake HfApi ----------------------------------------------------------


@dataclass
class FakeHub:
    """What the hub would answer: a model's files at one commit; what was uploaded."""

    files: dict[str, bytes] = field(default_factory=dict)
    commit: str = "3f1c0ffee"
    calls: list[tuple] = field(default_factory=list)

    def model_info(self, repo_id, *, revision=None):
        self.calls.append(("model_info", repo_id, revision))
        return SimpleNamespace(sha=self.commit)

    def snapshot_download(self, repo_id, *, revision=None, local_dir=None):
        self.calls.append(("snapshot_download", repo_id, revision))
        for name, data in self.files.items():
            path = Path(local_dir) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return local_dir

    def create_repo(self, repo_id, *, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))

    def upload_folder(self, *, repo_id, folder_path, commit_message):
        uploaded = sorted(p.relative_to(folder_path).as_posix()
                          for p in Path(folder_path).rglob("*") if p.is_file())  # fmt: skip
        self.calls.append(("upload_folder", repo_id, uploaded, commit_message))
        return SimpleNamespace(oid="c0mm1t", commit_url=f"https://hub/{repo_id}/commit/c0mm1t")


def fetch_args(tmp_path, **overrides):
    args = dict(output_dir=str(tmp_path / "o" / "fetch"), model="org/whisper-x",
                model_dir=str(tmp_path / "o" / "fetch" / "model"), revision="v2",
                source=None, data_root=None)  # fmt: skip
    return SimpleNamespace(**{**args, **overrides})


def test_the_model_is_downloaded_at_the_revision_s_commit_and_recorded(tmp_path):
    hub = FakeHub(files={"config.json": b"{}", "model.safetensors": b"w"})
    assert run_fetch(fetch_args(tmp_path), api=hub) == 0
    model = tmp_path / "o" / "fetch" / "model"
    assert tree(model) == hub.files
    # Resolved once, then every file downloaded at that commit.
    assert hub.calls == [("model_info", "org/whisper-x", "v2"),
                         ("snapshot_download", "org/whisper-x", hub.commit)]  # fmt: skip
    record = json.loads((tmp_path / "o" / "fetch" / "model.json").read_text())
    assert record == {"repo_id": "org/whisper-x", "revision": "v2", "commit": hub.commit}
    result = read_stage_result(tmp_path / "o" / "fetch")
    assert result is not None and result.message == f"fetched model org/whisper-x@{hub.commit}"
    # The model card names the hub model, not the folder the stages loaded.
    assert model_name(model) == "org/whisper-x"
    assert model_name(tmp_path / "elsewhere" / "model") == str(tmp_path / "elsewhere" / "model")


# --- push ---------------------------------------------------------------------------------


def exported(tmp_path) -> Path:
    model = tmp_path / "out" / "train" / "export"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"a": 1}')
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    return model


def push_args(tmp_path, model, to, private=True):
    return SimpleNamespace(model=str(model), to=to, output_dir=str(tmp_path / "out" / "push"),
                           private=private, commit_message="msg")  # fmt: skip


def test_push_puts_the_exported_model_under_an_object_store_folder(tmp_path):
    model = exported(tmp_path)
    target = f"/models-{uuid.uuid4().hex}/whisper"
    fs = fsspec.filesystem("memory")
    try:
        assert run_push(push_args(tmp_path, model, f"memory://{target}")) == 0
        assert fs.cat_file(f"{target}/config.json") == b'{"a": 1}'
        assert fs.cat_file(f"{target}/sub/weights.bin") == b"\x00\x01"
    finally:
        fs.rm(target.rsplit("/", 1)[0], recursive=True)
    result = read_stage_result(tmp_path / "out" / "push")
    assert result is not None and result.message == f"pushed 2 files to memory://{target}"


def test_push_to_a_file_url(tmp_path):
    model = exported(tmp_path)
    assert push_to_store(model, f"file://{tmp_path / 'published'}") == 2
    assert tree(tmp_path / "published") == tree(model)


def test_push_to_the_hub_creates_the_repo_and_uploads_one_commit(tmp_path):
    model = exported(tmp_path)
    hub = FakeHub()
    assert run_push(push_args(tmp_path, model, "hf://org/adapted", private=False), api=hub) == 0
    assert hub.calls == [
        ("create_repo", "org/adapted", False, True),
        ("upload_folder", "org/adapted", ["config.json", "sub/weights.bin"], "msg"),
    ]
    result = read_stage_result(tmp_path / "out" / "push")
    assert result is not None
    assert result.message == "pushed to hf://org/adapted: https://hub/org/adapted/commit/c0mm1t"


def test_push_without_an_exported_model_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no exported model there"):
        run_push(push_args(tmp_path, tmp_path / "missing", "memory:///x"))
