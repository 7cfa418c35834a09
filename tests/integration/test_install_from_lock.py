"""The operator image's install, run here on exactly the files its Dockerfile
copies: exact versions from uv.lock whatever newer releases the index offers,
no torch, no trainer code."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import tomllib
import zipfile
from pathlib import Path

from tests.integration.deploy.images import INSTALL_SCRIPT, image_tree
from tests.tools import ROOT, find_tool


def fake_release(folder: Path, name: str, version: str) -> Path:
    """A minimal valid wheel of `name` at `version`: a newer release than the lock's."""
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = f"{name}-{version}.dist-info/RECORD"
    lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(data)}")
    lines.append(f"{record},,")
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(record, "\n".join(lines) + "\n")
    return wheel


def locked_version(name: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (version,) = {p["version"] for p in lock["package"] if p["name"] == name}
    return version


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, env=env, check=False
    )


def test_the_operator_install_takes_the_lock_not_a_newer_release(tmp_path):
    newer = tmp_path / "newer"
    newer.mkdir()
    fake_release(newer, "pydantic", "99.0.0")
    uv = find_tool("uv")
    # Offered to a resolver, the fake release wins: it is visible to uv.
    scratch = tmp_path / "scratch"
    assert run(uv, "venv", "--quiet", scratch).returncode == 0
    resolved = run(
        uv, "pip", "install", "--dry-run", "--python", scratch / "bin" / "python",
        "--find-links", newer, "pydantic",
    )  # fmt: skip
    assert "pydantic==99.0.0" in resolved.stdout + resolved.stderr

    src = image_tree(ROOT / "Dockerfile.operator", tmp_path / "src")
    assert not (src / "trainer").exists()
    venv = tmp_path / "operator-venv"
    env = {**os.environ, "VENV": str(venv), "UV": uv, "UV_FIND_LINKS": str(newer)}
    done = run("bash", src / INSTALL_SCRIPT, "operator", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith(f"in {venv}, Python {python_version(venv)}")

    probe = (
        "import importlib.metadata as m, importlib.util as u;"
        "print(m.version('pydantic'), u.find_spec('torch') is None,"
        " u.find_spec('marco_trainer') is None, u.find_spec('kopf') is not None)"
    )
    assert run(venv / "bin" / "python", "-c", probe).stdout.split() == [
        locked_version("pydantic"),
        "True",
        "True",
        "True",
    ]
    assert "operator" in run(venv / "bin" / "marco", "--help").stdout


def python_version(venv: Path) -> str:
    probe = "import platform; print(platform.python_version())"
    return run(venv / "bin" / "python", "-c", probe).stdout.strip()
