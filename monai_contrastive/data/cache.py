"""Keys of on-disk caches (MONAI ``PersistentDataset``) that change when the input file or a parameter changes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["file_digest", "generated_dataset_cached", "item_file_hash", "transform_settings_hash"]

_SIMPLE = (str, int, float, bool, type(None))


def _plain(value: Any, depth: int = 0) -> Any:
    """A JSON-able view of a transform attribute, or ``...`` for what has no stable text (functions, tensors)."""
    if isinstance(value, _SIMPLE):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.size <= 64:
        return value.tolist()
    if isinstance(value, (list, tuple)) and len(value) <= 64:
        return [_plain(v, depth) for v in value]
    if isinstance(value, Mapping) and len(value) <= 64:
        return {str(k): _plain(v, depth) for k, v in value.items()}
    if (
        depth < 2
        and hasattr(value, "__dict__")
        and type(value).__module__.split(".")[0] in ("monai", "monai_contrastive")
    ):
        return {"class": type(value).__qualname__, **_settings(value, depth + 1)}
    return ...


def _settings(obj: Any, depth: int = 0) -> dict:
    out = {}
    for k, v in sorted(vars(obj).items()):
        p = _plain(v, depth)
        if p is not ...:
            out[k] = p
    return out


def transform_settings_hash(transforms: Sequence) -> bytes:
    """Hash of the class names and settings (simple attributes, and those of the array transforms a dictionary
    transform wraps) of ``transforms``: for ``PersistentDataset(hash_transform=...)``, so that a cache made with other
    parameters (e.g. another superpixel ``min_size`` or spacing) is not reused. MONAI's ``json_hashing`` falls back
    to the class names alone for transforms that are not JSON serialisable, which would reuse a stale cache."""
    desc = [{"class": type(t).__qualname__, **_settings(t)} for t in transforms]
    return hashlib.md5(json.dumps(desc, sort_keys=True, default=str).encode("utf-8")).hexdigest().encode("utf-8")


def item_file_hash(item: Any) -> bytes:
    """Hash of a data item and of the size and modification time of the files it names: for
    ``PersistentDataset(hash_func=...)``, so that a replaced file at the same path is processed again. A folder (a
    DICOM series) counts by the files in it, so a slice replaced, added or removed is noticed too."""
    files = {}

    def stat(path: str) -> None:
        st = os.stat(path)
        files[path] = [st.st_size, st.st_mtime_ns]

    def visit(v):
        if isinstance(v, str) and os.path.isfile(v):
            stat(v)
        elif isinstance(v, str) and os.path.isdir(v):
            for f in sorted(os.path.join(v, name) for name in os.listdir(v)):
                if os.path.isfile(f):
                    stat(f)
        elif isinstance(v, Mapping):
            for x in v.values():
                visit(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x)

    visit(item)
    text = json.dumps({"item": item, "files": files}, sort_keys=True, default=str)
    return hashlib.md5(text.encode("utf-8")).hexdigest().encode("utf-8")


def file_digest(paths: Sequence[str] | str) -> str:
    """MD5 of the content of each existing file of ``paths`` (``""`` entries and missing files count as absent):
    what a run was initialised from, for a resumable checkpoint's fingerprint. Content, not modification time, so a
    pretraining re-run that rewrites identical weights does not invalidate the fine-tuning that used them."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    out = []
    for p in paths:
        if p and os.path.isfile(p):
            h = hashlib.md5()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out.append(h.hexdigest())
        else:
            out.append("")
    return ",".join(out)


def generated_dataset_cached(
    output_dir: str,
    datalist_path: str,
    params_path: str,
    params: Mapping,
    lists: Sequence[str],
    path_keys: Sequence[str] = ("image", "label"),
) -> bool:
    """Whether a generated dataset in ``output_dir`` is complete and was made with ``params``.

    A generator writes its parameters to ``params_path`` and its datalist last: the dataset is reused when the saved
    parameters equal ``params``, the datalist reads, and every file its items name (under ``path_keys`` of the items
    of ``lists``, relative to ``output_dir``) exists. Anything unreadable counts as not cached (it is regenerated).
    """
    if not (os.path.isfile(datalist_path) and os.path.isfile(params_path)):
        return False
    try:
        with open(params_path) as f:
            if json.load(f) != params:
                return False
        with open(datalist_path) as f:
            datalist = json.load(f)
        items = [item for name in lists for item in datalist[name]]
        paths = [item[key] for item in items for key in path_keys if key in item]
        return all(os.path.isfile(os.path.join(output_dir, p)) for p in paths)
    except (OSError, ValueError, KeyError, TypeError):
        return False
