# Copyright (c) MONAI Consortium and monai-contrastive contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Readers for echocardiogram video datasets: the EchoNet-Dynamic ``FileList.csv`` and Decathlon-style JSON datalists of
videos with a numeric label (LVEF regression). Decoding, caching and normalising the videos is
:py:mod:`monai_contrastive.data.video`.

EchoNet-Dynamic (Ouyang et al., Nature 2020) is published as ``<root>/FileList.csv`` with the columns
``FileName, EF, ESV, EDV, FrameHeight, FrameWidth, FPS, NumberOfFrames, Split`` and ``<root>/Videos/<FileName>.avi``
(112x112 colour AVIs). In the release ``FileName`` has no ``.avi`` extension; both spellings are accepted here.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence

from monai.data import load_decathlon_datalist

from monai_contrastive.data.datalist import parse_number

__all__ = [
    "ECHONET_COLUMNS",
    "ECHONET_SPLITS",
    "load_echonet_filelist",
    "load_video_datalist",
    "load_echo_split",
]

ECHONET_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split")
ECHONET_SPLITS = ("TRAIN", "VAL", "TEST")


def _video_path(root: str, filename: str) -> str:
    """``Videos/<FileName>.avi``; FileName may or may not already carry the extension."""
    name = filename if filename.lower().endswith(".avi") else f"{filename}.avi"
    return os.path.abspath(os.path.join(root, "Videos", name))


def _normalize_splits(split: str | Sequence[str]) -> set[str] | None:
    """Upper-cased set of requested splits; ``None`` means every split (``"ALL"``)."""
    splits = [split] if isinstance(split, str) else list(split)
    if not splits:
        raise ValueError("split must name at least one split, e.g. 'TRAIN' or ['TRAIN', 'VAL'].")
    upper = {str(s).strip().upper() for s in splits}
    return None if "ALL" in upper else upper


def _raise_missing_files(missing: list[str], source: str) -> None:
    if missing:
        shown = "\n  ".join(missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(f"{len(missing)} video file(s) listed in {source} do not exist:\n  {shown}{more}")


def load_echonet_filelist(root: str, split: str | Sequence[str] = "TRAIN", check_files: bool = True) -> list[dict]:
    """
    Read an EchoNet-Dynamic ``FileList.csv`` into a MONAI datalist.

    Args:
        root: the EchoNet-Dynamic folder holding ``FileList.csv`` and ``Videos/``.
        split: ``"TRAIN"``, ``"VAL"``, ``"TEST"`` (case-insensitive), a sequence of them, or ``"ALL"``.
        check_files: check that every selected ``Videos/<FileName>.avi`` exists.

    Returns:
        one dict per selected row, in file order::

            {"image": "/abs/root/Videos/0X1A...avi", "label": 61.2 (EF, %), "filename": "0X1A...",
             "split": "TRAIN", "esv": 29.1, "edv": 75.0, "fps": 50.0, "num_frames": 201,
             "frame_height": 112, "frame_width": 112}

        ``esv``, ``edv``, ``fps``, ``num_frames``, ``frame_height`` and ``frame_width`` are NaN where the CSV leaves
        them empty; :py:func:`~monai_contrastive.data.check_video_files` and ``VideoCache.prepare`` check the videos
        against the last three.

    Raises:
        FileNotFoundError: ``FileList.csv`` or (with ``check_files``) a listed video is missing.
        ValueError: a required column is missing, an EF value is missing / non-numeric / NaN (the message names
            the CSV line and FileName), or no row belongs to the requested split.
    """
    root = os.path.abspath(os.path.expanduser(str(root)))
    csv_path = os.path.join(root, "FileList.csv")
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"EchoNet-Dynamic FileList.csv not found: {csv_path}")
    wanted = _normalize_splits(split)

    items: list[dict] = []
    seen_splits: set[str] = set()
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing_cols = [c for c in ECHONET_COLUMNS if c not in header]
        if missing_cols:
            raise ValueError(f"{csv_path}: missing column(s) {missing_cols}; found {header}.")
        reader.fieldnames = header
        for row in reader:
            lineno = reader.line_num
            filename = (row.get("FileName") or "").strip()
            where = f"{csv_path} line {lineno} (FileName={filename!r})"
            if not filename:
                raise ValueError(f"{where}: FileName is empty.")
            row_split = (row.get("Split") or "").strip().upper()
            seen_splits.add(row_split)
            if wanted is not None and row_split not in wanted:
                continue
            items.append(
                {
                    "image": _video_path(root, filename),
                    "label": parse_number(row.get("EF"), where, "EF"),
                    "filename": filename,
                    "split": row_split,
                    "esv": parse_number(row.get("ESV"), where, "ESV", optional=True),
                    "edv": parse_number(row.get("EDV"), where, "EDV", optional=True),
                    "fps": parse_number(row.get("FPS"), where, "FPS", optional=True),
                    "num_frames": parse_number(
                        row.get("NumberOfFrames"), where, "NumberOfFrames", integer=True, optional=True
                    ),
                    "frame_height": parse_number(
                        row.get("FrameHeight"), where, "FrameHeight", integer=True, optional=True
                    ),
                    "frame_width": parse_number(
                        row.get("FrameWidth"), where, "FrameWidth", integer=True, optional=True
                    ),
                }
            )
    if not items:
        raise ValueError(
            f"{csv_path}: no rows with Split in {sorted(wanted) if wanted else 'ALL'}; "
            f"splits present: {sorted(seen_splits)}."
        )
    if check_files:
        _raise_missing_files([it["image"] for it in items if not os.path.isfile(it["image"])], csv_path)
    return items


def load_video_datalist(
    datalist: str,
    key: str = "training",
    base_dir: str | None = None,
    check_files: bool = True,
    label_required: bool = True,
) -> list[dict]:
    """
    Read a Decathlon-style JSON datalist of videos with a numeric label (EF) for sources other than EchoNet.

    The file looks like ``{"training": [{"image": "videos/a.avi", "label": 55.0, "quality": 1}, ...],
    "validation": [...]}``; relative ``image`` paths are resolved against ``base_dir`` (default: the JSON's folder)
    by :py:func:`monai.data.load_decathlon_datalist`. Extra keys (e.g. ``quality``) are kept.

    Args:
        datalist: path of the JSON file.
        key: which list to read (``"training"``, ``"validation"``, ``"testing"``, ...).
        base_dir: folder that relative paths are relative to.
        check_files: check that every video exists.
        label_required: every item must have a numeric ``label``; ``False`` (inference on unlabelled videos) keeps
            items without one, but a label that is present must still be a number.

    Returns:
        the items with ``label`` as a float and ``filename`` (the video's base name) added when absent.

    Raises:
        FileNotFoundError: the datalist or (with ``check_files``) a video is missing.
        KeyError: ``key`` is not in the datalist.
        ValueError: the list is empty, an item has no ``image``, or its ``label`` is missing / non-numeric / NaN
            (the message names the datalist, the key and the item index).
    """
    datalist = os.path.abspath(os.path.expanduser(str(datalist)))
    if not os.path.isfile(datalist):
        raise FileNotFoundError(f"video datalist not found: {datalist}")
    with open(datalist) as f:
        content = json.load(f)
    if not isinstance(content, dict) or key not in content:
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise KeyError(f"{datalist}: no list under key {key!r}; found {found}.")
    if not content[key]:
        raise ValueError(f"{datalist}: the list under key {key!r} is empty.")
    items = load_decathlon_datalist(datalist, is_segmentation=False, data_list_key=key, base_dir=base_dir)
    out = []
    for i, item in enumerate(items):
        where = f"{datalist} [{key!r}][{i}]"
        image = item.get("image")
        if not isinstance(image, str) or not image:
            raise ValueError(f"{where}: 'image' must be a video path, got {image!r}.")
        where = f"{where} ({image})"
        item = dict(item)
        item["image"] = os.path.abspath(image)
        if label_required or item.get("label") is not None:
            item["label"] = parse_number(item.get("label"), where, field="label")
        item.setdefault("filename", os.path.splitext(os.path.basename(image))[0])
        out.append(item)
    if check_files:
        _raise_missing_files([it["image"] for it in out if not os.path.isfile(it["image"])], f"{datalist} [{key!r}]")
    return out


_SPLIT_KEYS = {"TRAIN": "training", "VAL": "validation", "TEST": "test"}


def load_echo_split(
    source: str, split: str = "TRAIN", check_files: bool = True, label_required: bool = True
) -> list[dict]:
    """
    The items of one split of an echo dataset, whichever form it comes in.

    Args:
        source: an EchoNet-Dynamic folder (holding ``FileList.csv``), the path of a ``FileList.csv``, or a JSON
            datalist for :py:func:`load_video_datalist` with ``"training"``, ``"validation"`` and ``"test"`` (or
            ``"testing"``) lists.
        split: ``"TRAIN"``, ``"VAL"`` or ``"TEST"`` (case-insensitive; ``"ALL"`` too for FileList.csv).
        check_files: check that the videos exist.
        label_required: for a JSON datalist, whether every item needs a ``label`` (``FileList.csv`` always has EF).

    Raises:
        FileNotFoundError: ``source`` does not exist or is a folder without ``FileList.csv``.
        KeyError, ValueError: as the underlying reader, naming the file.
    """
    source = os.path.abspath(os.path.expanduser(os.fspath(source)))
    split_u = str(split).upper()
    if source.lower().endswith(".json"):
        if split_u not in _SPLIT_KEYS:
            raise ValueError(
                f"{source}: split must be one of {sorted(_SPLIT_KEYS)} for a JSON datalist, got {split!r}."
            )
        key = _SPLIT_KEYS[split_u]
        if key == "test" and os.path.isfile(source):
            with open(source) as f:
                content = json.load(f)
            if isinstance(content, dict) and "test" not in content and "testing" in content:
                key = "testing"
        return load_video_datalist(source, key=key, check_files=check_files, label_required=label_required)
    root = os.path.dirname(source) if source.lower().endswith(".csv") else source
    if not os.path.isdir(root):
        raise FileNotFoundError(f"echo dataset not found: {source} (expected an EchoNet-Dynamic folder or a datalist).")
    return load_echonet_filelist(root, split_u, check_files=check_files)
