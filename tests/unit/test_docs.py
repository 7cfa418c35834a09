"""The repository documents itself: no reference to a document it lacks, every
Markdown link resolves, and the README names every make target a contributor uses."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.tools import ROOT

# A Markdown document named in text, bare or with its folder.
DOC_NAME = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.md)\b")
# Documents a run writes (not repository files), and the module that writes each.
GENERATED = {
    "report.md": "trainer/marco_trainer/report.py",
    "adaptation.md": "benchmarks/adaptation.py",
}
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def tracked() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    return [ROOT / name for name in names if name]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text()
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return None


def test_no_file_names_a_document_the_repository_lacks():
    files = tracked()
    documents = {p.relative_to(ROOT).as_posix() for p in files if p.suffix == ".md"}
    basenames = {Path(d).name for d in documents}
    missing = []
    for path in files:
        text = text_of(path)
        if text is None:
            continue
        for name in DOC_NAME.findall(text):
            if Path(name).name in GENERATED:
                continue
            # A bare name is fine when some tracked document has it; a path must exist
            # as written, from the repository root or from the naming file's folder.
            if "/" not in name:
                found = name in basenames
            else:
                found = (ROOT / name).is_file() or (path.parent / name).is_file()
            if not found:
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert missing == []


def test_the_generated_documents_are_written_by_the_named_module():
    for name, writer in GENERATED.items():
        assert f'"{name}"' in (ROOT / writer).read_text()


def test_every_relative_markdown_link_resolves():
    broken = []
    for path in tracked():
        if path.suffix != ".md":
            continue
        for target in LINK.findall(path.read_text()):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_readme_names_every_target_make_help_lists():
    shown = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    targets = re.findall(r"^\s+make ([a-z0-9-]+)\s", shown.stdout, flags=re.M)
    # The contributor's targets, whatever else is added later.
    assert {"demo", "test", "unit", "lint", "lock", "crd", "chart"} <= set(targets)
    readme = (ROOT / "README.md").read_text()
    assert [t for t in targets if f"make {t}" not in readme] == []
