"""Files and folders that appear complete or not at all, with the permissions any normal tool gives them.

Everything the project writes for a user (CLI results, reports, trained and exported models, publish folders)
goes through :func:`atomic_file` or :func:`atomic_folder`: the content is written under a hidden temporary name
in the destination's own folder and renamed into place once complete, so an interruption (an error, Ctrl-C,
SIGKILL) never leaves a truncated file behind, and a reader never sees half of one.

The temporary entries are created with `os.open(..., 0o666)` / `os.mkdir(..., 0o777)` rather than
`tempfile.mkstemp` / `mkdtemp`, whose owner-only modes (0600 / 0700) would survive the rename: the process's
umask applies as it does for any other file (0644 / 0755 under umask 022). Libraries that write through such
temporary files themselves (transformers' `save_pretrained` does) leave owner-only files inside a folder, so
`atomic_folder` gives everything in it the umask's modes before the rename.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

PARTIAL_SUFFIX = ".partial"


def partial_name(path: Path) -> Path:
    """A fresh hidden name beside `path` for its content in progress, e.g. `.result.png.1f2e3d4c.partial`."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


def _create(path: Path, make) -> Path:
    """Call `make(candidate)` on fresh partial names beside `path` until one does not exist yet."""
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(2, "no such folder", str(folder))
    while True:
        candidate = partial_name(path)
        try:
            make(candidate)
            return candidate
        except FileExistsError:
            continue
        except OSError as error:
            # Name the folder the user chose, not a temporary file they have never heard of.
            raise type(error)(error.errno, f"cannot write into this folder ({error.strerror})", str(folder)) from None


def _rename(temporary: Path, path: Path) -> None:
    """Move the finished `temporary` to `path`; an error names `path` (e.g. a folder in the way), not `temporary`."""
    try:
        os.replace(temporary, path)
    except OSError as error:
        raise type(error)(error.errno, error.strerror, str(path)) from None


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a file to write `path` completely or not at all.

    Yields the open handle of a temporary file beside `path`; when the block ends without an exception it is
    closed and renamed to `path` (replacing a file there), otherwise it is deleted and `path` is untouched.

    Args:
        path: destination file; its folder must exist.
        mode: `"wb"` or `"w"`.
        encoding: for text mode (default UTF-8).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file writes new files only: mode 'wb' or 'w', got {mode!r}")
    path = Path(path)
    temporary = _create(path, lambda name: os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)))
    try:
        with open(temporary, mode, encoding=encoding or ("utf-8" if mode == "w" else None)) as handle:
            yield handle
        _rename(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_file`)."""
    with atomic_file(path) as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically (see `atomic_file`)."""
    with atomic_file(path, "w") as handle:
        handle.write(text)


@contextmanager
def atomic_folder(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Build a folder that appears at `path` complete or not at all.

    Yields an empty temporary folder beside `path`; when the block ends without an exception it is renamed to
    `path`, otherwise it is deleted with everything in it.

    Args:
        path: destination folder; its parent is created if needed.
        replace: replace an existing folder at `path` (it is moved aside first and deleted after the rename,
            so `path` always holds either the old or the new folder). Without it an existing `path` is an error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not replace:
        raise FileExistsError(17, "already exists", str(path))
    staging = _create(path, lambda name: os.mkdir(name, 0o777))
    try:
        yield staging
        apply_umask_modes(staging)
        old = None
        if path.exists():
            old = partial_name(path)
            path.rename(old)
        try:
            _rename(staging, path)
        except BaseException:
            if old is not None:  # the old folder goes back: `path` never ends up holding neither
                old.rename(path)
            raise
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux's /proc)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it, and at once back
    os.umask(mask)
    return mask


def apply_umask_modes(folder: Path) -> None:
    """Give `folder` and everything in it the modes a new file or folder gets under the current umask."""
    umask = current_umask()
    for root, _, files in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o100
                os.chmod(path, (0o777 if executable else 0o666) & ~umask)


__all__ = [
    "PARTIAL_SUFFIX",
    "apply_umask_modes",
    "current_umask",
    "atomic_file",
    "atomic_folder",
    "partial_name",
    "write_bytes",
    "write_text",
]
