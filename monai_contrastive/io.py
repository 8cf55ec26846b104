"""Files written whole or not at all, and state dicts read from weights files.

Every file the package writes that another process may read at the same time (checkpoints, served models, cached
decoded videos, demo datasets, reports) goes through :func:`atomic_write` / :func:`atomic_path`: the content is
written to a temporary file in the target's folder and moved over the target with ``os.replace``, so a reader sees
the old file or the new one, never half of one, and a crash or an exception during the write leaves the old file.
The temporary file gets the mode a plain ``open(path, "w")`` would give (see :func:`apply_umask`).

Every weights file is read through :func:`read_state_dict`: ``torch.load(..., weights_only=True)`` (no code is run
from the file), then the state dict taken from a checkpoint entry and a name prefix stripped, with errors that name
the file and the missing entry.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

__all__ = ["apply_umask", "atomic_path", "atomic_write", "atomic_save", "atomic_write_json", "read_state_dict"]


def apply_umask(path: str) -> None:
    """Give ``path`` the mode a plain ``open(path, "w")`` gives: 0666 less the process umask.

    ``tempfile.mkstemp`` creates files with mode 0600; a checkpoint, model or cache moved into place from such a file
    would otherwise be unreadable by the group and others, unlike every other file the run writes.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "", prefix: str = ".tmp-", tmp_path: str | None = None) -> Iterator[str]:
    """Yield a temporary file path in ``path``'s folder; when the block ends without an exception, move it to ``path``.

    For writers that take a file name (``nibabel.save``, ``cv2.VideoWriter``, ``PIL.Image.save``). When the block
    raises, the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the file to write.
        suffix: the temporary file's suffix; writers that pick the format from the name need the target's
            (``".nii.gz"``, ``".avi"``).
        prefix: the temporary file's prefix (a leading dot hides it from listings).
        tmp_path: use this temporary name (in ``path``'s folder) instead of a fresh ``tempfile.mkstemp`` one, where
            the name ends up in the file (gzip headers store it) or a cleaner recognises it.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if tmp_path is None:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
        os.close(fd)
    else:
        tmp = tmp_path
    try:
        yield tmp
        apply_umask(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)


def atomic_write(
    path: str, write: Callable[[IO], Any], binary: bool = False, suffix: str = "", sync: bool = True
) -> str:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, then move it to ``path``; return ``path``.

    Args:
        path: the file to write (its folder is created).
        write: writes the content to the open file object it is given.
        binary: open the temporary file in binary mode.
        suffix: the temporary file's suffix.
        sync: ``fsync`` before the move, so that a power cut cannot leave an empty file under the new name
            (checkpoints); caches that are rebuilt when lost can skip it.
    """
    with atomic_path(path, suffix=suffix) as tmp:
        with open(tmp, "wb" if binary else "w", newline=None if binary else "") as f:
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
    return path


def atomic_save(obj: Any, path: str) -> str:
    """``torch.save(obj)`` to ``path`` atomically (a crash leaves the old file); return ``path``."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f), binary=True, suffix=".pt")


def atomic_write_json(obj: Any, path: str, indent: int | None = 2, sync: bool = True, **dump_kwargs: Any) -> str:
    """Write ``obj`` as JSON to ``path`` atomically; return ``path``. ``dump_kwargs`` go to ``json.dump``."""
    return atomic_write(path, lambda f: json.dump(obj, f, indent=indent, **dump_kwargs), suffix=".json", sync=sync)


def read_state_dict(
    path: str,
    key: str | None = None,
    prefix: str = "",
    key_optional: bool = False,
    map_location: Any = "cpu",
    what: str = "weights",
) -> dict:
    """Read the state dict in the weights file ``path`` (``torch.load(..., weights_only=True)``).

    Args:
        path: a ``.pt``/``.pth`` file: a plain state dict, or a checkpoint dict holding one under ``key``.
        key: the checkpoint entry holding the state dict (``"model"``, ``"state_dict"``); None: the whole file.
        prefix: keep only the tensors whose names start with this, with it stripped (``"module."``,
            ``"encoder."``).
        key_optional: a file without ``key`` is taken as a plain state dict (a served ``models/model.pt`` and a
            resumable checkpoint both load); otherwise its absence is an error.
        map_location: as in ``torch.load``.
        what: what the file is, for the error messages (``"checkpoint"``, ``"fold 2: checkpoint"``).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names ``what`` and ``path``).
        RuntimeError: ``path`` cannot be read as a weights file (the message names it).
        KeyError: ``key`` is not in the file and not ``key_optional`` (the message names the file, the key and the
            file's first entries).
        ValueError: ``prefix`` matches no tensor of the file (the message names the file and the prefix).
    """
    import torch

    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} not found.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(f"cannot read {what} {path!r} as a weights file: {e}") from e
    if key:
        if isinstance(state, Mapping) and key in state:
            state = state[key]
        elif not key_optional:
            entries = sorted(map(str, state))[:10] if isinstance(state, Mapping) else type(state).__name__
            raise KeyError(f"{what} {path!r} has no entry {key!r} (entries: {entries}).")
    if prefix:
        if not isinstance(state, Mapping):
            raise KeyError(f"{what} {path!r} is not a state dict (a {type(state).__name__}).")
        stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not stripped:
            raise ValueError(f"{what} {path!r} has no tensor named {prefix!r}... (first: {sorted(state)[:5]}).")
        state = stripped
    return state
