"""Reading segmentation datalists (Decathlon JSON) and choosing the few-label training subsets."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.data import load_decathlon_datalist

from monai_contrastive.data.formats import is_dicom_file

__all__ = ["IMAGE_EXTENSIONS", "list_images", "load_segmentation_datalist", "take_items"]

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
"""Volume files :func:`list_images` picks up (MONAI ``LoadImage`` reads them with nibabel or ITK)."""


def load_segmentation_datalist(
    datalist: str, split: str = "training", require_label: bool = True, keys: Sequence[str] = ("image", "label")
) -> list[dict]:
    """Items of one split of a Decathlon-style datalist, paths made absolute, every file checked to exist.

    Args:
        datalist: the JSON file; relative paths are relative to its folder (MONAI ``load_decathlon_datalist``).
        split: the list to read (``"training"``, ``"validation"``, ``"testing"``, ``"unlabelled"``...).
        require_label: every item must have a ``label`` (segmentation training and evaluation).
        keys: the path keys to check.

    Raises:
        FileNotFoundError: the datalist or a file of an item is missing (the item's index and key are named).
        KeyError: the split is not in the datalist (the available lists are named).
        ValueError: the split is empty or an item lacks ``image`` (or ``label`` when required).
    """
    if not os.path.isfile(datalist):
        raise FileNotFoundError(f"datalist {datalist!r} not found.")
    with open(datalist) as f:
        raw = json.load(f)
    lists = sorted(k for k, v in raw.items() if isinstance(v, list))
    if split not in raw:
        raise KeyError(f"datalist {datalist!r} has no {split!r} list (lists: {lists}).")
    if not raw[split]:
        raise ValueError(f"datalist {datalist!r}: the {split!r} list is empty.")
    needed = ["image"] + (["label"] if require_label else [])
    for i, item in enumerate(raw[split]):
        if not isinstance(item, dict):
            raise ValueError(f"datalist {datalist!r}, {split}[{i}]: expected an object with 'image', got {item!r}.")
        missing = [k for k in needed if not item.get(k)]
        if missing:
            raise ValueError(f"datalist {datalist!r}, {split}[{i}]: no {missing} (keys: {sorted(item)}).")
    items = load_decathlon_datalist(datalist, is_segmentation=True, data_list_key=split)
    for i, item in enumerate(items):
        for k in keys:
            value: Any = item.get(k)
            if isinstance(value, str) and not os.path.exists(value):
                raise FileNotFoundError(f"datalist {datalist!r}, {split}[{i}] {k!r}: file {value!r} not found.")
    return items


def _holds_dicom(folder: str) -> bool:
    return any(
        is_dicom_file(os.path.join(folder, f)) for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))
    )


def list_images(folder: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """The volumes in ``folder`` (sorted), e.g. the input of a bundle's inference: files with one of ``extensions``
    and DICOM series, i.e. subfolders holding DICOM files (``.dcm``, or the ``DICM`` marker of suffix-less PACS
    exports), each one volume that ``LoadImage`` reads through ITK. A ``folder`` that holds only DICOM files is itself
    one series.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: it holds no volume file and no DICOM series.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"input folder {folder!r} not found.")
    entries = sorted(os.listdir(folder))
    files = [
        os.path.join(folder, f)
        for f in entries
        if f.lower().endswith(tuple(extensions)) and os.path.isfile(os.path.join(folder, f))
    ]
    series = [os.path.join(folder, f) for f in entries if os.path.isdir(os.path.join(folder, f))]
    series = [d for d in series if _holds_dicom(d)]
    volumes = sorted(files + series)
    if not volumes and _holds_dicom(folder):
        return [folder]
    if not volumes:
        raise ValueError(
            f"input folder {folder!r} holds no volume ({', '.join(extensions)}) and no DICOM series (a subfolder of"
            " DICOM files)."
        )
    return volumes


def take_items(items: Sequence[dict], n: int | str | None, seed: int = 0, what: str = "training volumes") -> list[dict]:
    """``n`` items drawn without replacement by a seeded permutation (all of them for None, 0 or ``"all"``).

    The subsets of one seed are nested (the first 10 are among the first 60), as in a few-label study where the
    smaller labelled set is part of the larger one.

    Raises:
        ValueError: ``n`` is negative, not a whole number, or larger than ``len(items)``.
    """
    if n is None or n == 0 or (isinstance(n, str) and n.strip().lower() in ("all", "none", "")):
        return list(items)
    if isinstance(n, bool) or not float(n).is_integer() or int(n) < 0:
        raise ValueError(f"the number of {what} must be a whole number >= 0 (0 or null: all), got {n!r}.")
    n = int(n)
    if n > len(items):
        raise ValueError(f"asked for {n} {what}, but the datalist has {len(items)}.")
    order = np.random.default_rng(seed).permutation(len(items))[:n]
    return [items[i] for i in order]


def load_image_items(datalist: str, splits: Sequence[str] | str = ("unlabelled", "training")) -> list[dict]:
    """The images (no labels) of one or more lists of a datalist, for self-supervised pretraining: ``[{"image":
    path, "case": ..., "phase": ...}]``, each file checked; lists missing from the datalist or empty (e.g. a
    pretraining set with no labelled ``training`` cases) are skipped, but at least one image must be listed.

    Raises:
        KeyError: none of ``splits`` is in the datalist with an image.
    """
    splits = [splits] if isinstance(splits, str) else list(splits)
    if not os.path.isfile(datalist):
        raise FileNotFoundError(f"datalist {datalist!r} not found.")
    with open(datalist) as f:
        raw = json.load(f)
    present = [s for s in splits if isinstance(raw.get(s), list) and raw[s]]
    if not present:
        found = {s: len(raw[s]) for s in splits if isinstance(raw.get(s), list)}
        raise KeyError(
            f"datalist {datalist!r} has no images in the lists {splits} to pretrain on"
            + (f" (empty: {sorted(found)})." if found else ".")
        )
    out = []
    for split in present:
        for item in load_segmentation_datalist(datalist, split, require_label=False, keys=("image",)):
            out.append({k: item[k] for k in ("image", "case", "phase") if k in item})
    return out
