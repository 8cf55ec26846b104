"""Datalists for image regression: loading with validation, patient-grouped cross-validation folds, and resolving
a bundle's ``dataset_dir`` to a datalist (the embedded demo data when none is given)."""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np
from monai.data import load_decathlon_datalist

__all__ = [
    "load_regression_datalist",
    "parse_number",
    "patient_grouped_folds",
    "select_fold",
    "resolve_datalist",
    "items_fingerprint",
    "check_loader_batches",
    "share_worker_tempdir",
]

_SPLITS = ("train", "val")


def load_regression_datalist(
    datalist: str,
    key: str = "training",
    base_dir: str | None = None,
    label_key: str | None = "label",
    check_files: bool = True,
) -> list[dict]:
    """Load and validate one list of a Decathlon-style datalist whose labels are numbers.

    Paths are resolved by ``monai.data.load_decathlon_datalist`` (relative to ``base_dir``, by default the JSON's
    folder). Every item must have an ``"image"`` (a path or a list of paths) and a finite numeric label under
    ``label_key``; extra keys (``"patient"``, ...) are kept. Numeric strings such as ``"0.71"`` are accepted.

    Args:
        datalist: path of the datalist JSON file.
        key: which list to load (``"training"``, ``"validation"``, ``"testing"``, ...).
        base_dir: folder the relative paths are resolved against; default: the folder of ``datalist``.
        label_key: key of the regression label; ``None`` for a list without labels (e.g. inference).
        check_files: check that every image file exists.

    Returns:
        The items, each a new dict with absolute-or-resolved image paths and ``item[label_key]`` as a ``float``.

    Raises:
        FileNotFoundError: the datalist file, or an item's image file (named with its index), does not exist.
        ValueError: the file is not valid JSON, ``key`` is missing, not a list or empty, an item is not a dict, or
            a label is not a finite number (the message names the index, the image and the value).
        KeyError: an item lacks ``"image"`` or ``label_key`` (the message names the index and the key).
    """
    path = os.path.expanduser(os.fspath(datalist))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Datalist file not found: '{path}'.")
    try:
        with open(path) as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"Datalist '{path}' is not valid JSON: {e}.") from e
    if not isinstance(content, dict) or key not in content:
        available = sorted(k for k, v in content.items() if isinstance(v, list)) if isinstance(content, dict) else []
        raise ValueError(f"Datalist '{path}' has no list '{key}' (lists found: {available}).")
    entries = content[key]
    if not isinstance(entries, list) or len(entries) == 0:
        raise ValueError(f"Datalist '{path}': '{key}' must be a non-empty list of items, got {entries!r:.80}.")
    for index, entry in enumerate(entries):
        if isinstance(entry, dict):
            if "image" not in entry:
                raise KeyError(f"Datalist '{path}', '{key}' item {index} has no 'image' key: {entry!r:.200}.")
            if label_key is not None and label_key not in entry:
                raise KeyError(f"Datalist '{path}', '{key}' item {index} has no '{label_key}' key: {entry!r:.200}.")
        elif not (label_key is None and isinstance(entry, str)):
            # a bare path is only meaningful for an unlabelled list (Decathlon "test" style)
            raise ValueError(f"Datalist '{path}', '{key}' item {index} must be a dict, got {entry!r:.200}.")

    if all(isinstance(e, dict) for e in entries):
        items = load_decathlon_datalist(path, is_segmentation=False, data_list_key=key, base_dir=base_dir)
    else:
        # load_decathlon_datalist wraps bare paths only for the key "test"; do it for any key
        root = os.path.dirname(path) if base_dir is None else os.fspath(base_dir)
        items = [dict(e) if isinstance(e, dict) else {"image": e} for e in entries]
        for item in items:
            image = item["image"]
            item["image"] = (
                [os.path.normpath(os.path.join(root, i)) for i in image]
                if isinstance(image, list)
                else os.path.normpath(os.path.join(root, image))
            )

    for index, item in enumerate(items):
        if check_files:
            images = item["image"] if isinstance(item["image"], list) else [item["image"]]
            for image in images:
                if not isinstance(image, (str, os.PathLike)) or not os.path.isfile(image):
                    raise FileNotFoundError(
                        f"Datalist '{path}', '{key}' item {index}: image file not found: {image!r}."
                    )
        if label_key is not None:
            where = f"Datalist '{path}', '{key}' item {index} (image {item.get('image')!r})"
            item[label_key] = parse_number(item[label_key], where, field=label_key)
    return items


def parse_number(
    value: Any, where: str, field: str = "label", integer: bool = False, optional: bool = False
) -> float | int:
    """The number held by one field of a datalist item or a CSV row, or a ``ValueError`` naming where it comes from.

    Shared by every datalist reader of the package (:py:func:`load_regression_datalist`, the EchoNet-Dynamic
    ``FileList.csv`` and video datalist readers). Accepted: an ``int`` or ``float`` (a ``bool`` is not a number), a
    numeric string such as ``"0.71"`` or ``" 61.2 "``, or a one-element list of one of these. Rejected: other
    strings (``"n/a"``, ``"0,71"``), other lists, and, unless ``optional``, a missing value (``None`` or a blank
    string), NaN and infinity.

    Args:
        value: the raw value, as JSON or ``csv`` gives it.
        where: what the value belongs to, starting the message, e.g. ``"Datalist 'd.json', 'training' item 3
            (image 'a.png')"`` or ``"FileList.csv line 4 (FileName='0X1A')"``.
        field: the field's name in the message, e.g. ``"label"`` or ``"EF"``.
        integer: round a finite value to an ``int``.
        optional: an informational column: a missing value gives NaN (collatable, unlike ``None``) and NaN or
            infinity are kept; only a value that is not a number raises.

    Returns:
        the value as a ``float`` (an ``int`` with ``integer`` when it is finite).

    Raises:
        ValueError: ``"{where}: {field} must be a finite number, got {value!r}."`` (``... a number ...`` when
            ``optional``); a missing value adds ``({field} is missing)``.
    """
    while isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return float("nan")
        raise ValueError(f"{where}: {field} must be a finite number, got {value!r} ({field} is missing).")
    number: float | None = None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not (optional or math.isfinite(number)):
        expected = "a number" if optional else "a finite number"
        raise ValueError(f"{where}: {field} must be {expected}, got {value!r}.")
    if integer and math.isfinite(number):
        return int(round(number))
    return number


def patient_grouped_folds(
    items: Sequence[dict], num_folds: int = 4, group_key: str = "patient", seed: int = 0
) -> list[int]:
    """Assign items to cross-validation folds so that all items of a group (patient) share one fold.

    Groups are shuffled with ``numpy.random.default_rng(seed)``, ordered by size (largest first, ties in the
    shuffled order), and each is given to the fold with the fewest items so far (lowest fold index on ties):
    fold sizes differ by at most the size of the largest group. The result depends only on the items' group
    values, their order, ``num_folds`` and ``seed``.

    Args:
        items: datalist items.
        num_folds: number of folds (at least 2).
        group_key: item key holding the group id; an item without it is a group of its own (with a warning).
        seed: seed of the shuffle.

    Returns:
        The fold index, in ``[0, num_folds)``, of every item, in the order of ``items``.

    Raises:
        ValueError: ``items`` is empty, ``num_folds < 2``, or there are fewer groups than folds.
    """
    if isinstance(num_folds, bool) or int(num_folds) != num_folds or num_folds < 2:
        raise ValueError(f"num_folds must be an integer >= 2, got {num_folds!r}.")
    num_folds = int(num_folds)
    if len(items) == 0:
        raise ValueError("Cannot split an empty list of items into folds.")
    group_of: list[Any] = []
    missing = []
    for index, item in enumerate(items):
        if group_key in item:
            value = item[group_key]
            group_of.append(("group", value if _hashable(value) else repr(value)))
        else:
            missing.append(index)
            group_of.append(("item", index))
    if missing:
        warnings.warn(
            f"{len(missing)} of {len(items)} items have no '{group_key}' key (first: item {missing[0]}); each is "
            "treated as a group of its own, so films of one patient may land in different folds.",
            stacklevel=2,
        )
    groups = list(dict.fromkeys(group_of))  # first-appearance order
    if len(groups) < num_folds:
        raise ValueError(
            f"Cannot split {len(groups)} '{group_key}' groups into {num_folds} folds; need at least one per fold."
        )
    sizes: dict[Any, int] = {}
    for g in group_of:
        sizes[g] = sizes.get(g, 0) + 1
    order = np.random.default_rng(seed).permutation(len(groups))
    shuffled = sorted((groups[i] for i in order), key=lambda g: -sizes[g])  # stable: ties keep the shuffle
    fold_sizes = [0] * num_folds
    fold_of: dict[Any, int] = {}
    for g in shuffled:
        fold = min(range(num_folds), key=lambda f: fold_sizes[f])
        fold_of[g] = fold
        fold_sizes[fold] += sizes[g]
    return [fold_of[g] for g in group_of]


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def select_fold(
    items: Sequence[dict],
    fold: int,
    split: str = "train",
    num_folds: int = 4,
    group_key: str = "patient",
    seed: int = 0,
) -> list[dict]:
    """Return the training or validation part of one patient-grouped cross-validation fold.

    Args:
        items: datalist items.
        fold: which fold is the validation fold, in ``[0, num_folds)``.
        split: ``"train"`` for the items outside fold ``fold``, ``"val"`` for the items in it.
        num_folds: number of folds.
        group_key: see :py:func:`patient_grouped_folds`.
        seed: see :py:func:`patient_grouped_folds`.

    Returns:
        The selected items, in their original order.

    Raises:
        ValueError: ``split`` is not ``"train"`` or ``"val"``, ``fold`` is out of range, or the folds cannot be
            made (see :py:func:`patient_grouped_folds`).
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}.")
    if isinstance(fold, bool) or not isinstance(fold, numbers.Integral) or not 0 <= fold < num_folds:
        raise ValueError(f"fold must be an integer in [0, {num_folds}), got {fold!r}.")
    folds = patient_grouped_folds(items, num_folds=num_folds, group_key=group_key, seed=seed)
    in_fold = split == "val"
    return [item for item, f in zip(items, folds) if (f == fold) == in_fold]


def resolve_datalist(
    dataset_dir: str | None,
    demo: str,
    demo_dir: str,
    datalist_name: str = "dataset.json",
    reuse_existing: bool = False,
    **demo_kwargs: Any,
) -> str:
    """Return the datalist a bundle should read: the user's, or the embedded demo dataset's when none is given.

    When the demo data is used, one line on stdout says so, where it is and with which settings it is (or was)
    generated.

    Args:
        dataset_dir: ``None``, ``""`` or ``"None"`` (as a config or CLI override may spell it) to use the demo
            data; the path of a ``.json`` datalist; or a folder holding ``datalist_name``.
        demo: name of the demo dataset in ``monai_contrastive.data.DEMO_GENERATORS`` (e.g. ``"bmd_xray"``).
        demo_dir: cache folder the demo dataset is generated into.
        datalist_name: datalist file name looked up inside a ``dataset_dir`` folder (and inside ``demo_dir``).
        reuse_existing: when ``demo_dir`` already holds a complete demo dataset, use it whatever ``demo_kwargs``
            say (evaluation and inference must read the data the model was trained on, not regenerate it with
            other settings); generate it only when there is none.
        demo_kwargs: passed to the demo generator (``num_patients``, ``seed``, ...).

    Returns:
        The path of the datalist (for a generated demo: what its generator returns).

    Raises:
        ValueError: ``demo`` is not a registered demo dataset.
        FileNotFoundError: the given ``.json`` file, or ``datalist_name`` inside ``dataset_dir``, does not exist.
    """
    if dataset_dir is None or str(dataset_dir).strip() in ("", "None"):
        demo_dir = os.path.abspath(os.path.expanduser(os.fspath(demo_dir)))
        existing = os.path.join(demo_dir, datalist_name)
        if reuse_existing and os.path.isfile(existing):
            print(
                f"dataset_dir is not set: using the existing '{demo}' demo data in {demo_dir} "
                f"({_demo_settings(demo_dir)}).",
                flush=True,
            )
            return existing
        settings = ", ".join(f"{k}={v!r}" for k, v in demo_kwargs.items()) or "the generator's defaults"
        print(f"dataset_dir is not set: using the '{demo}' demo data in {demo_dir} ({settings}).", flush=True)
        return _demo_generator(demo)(demo_dir, **demo_kwargs)
    dataset_dir = os.path.expanduser(os.fspath(dataset_dir))
    if dataset_dir.lower().endswith(".json"):
        if not os.path.isfile(dataset_dir):
            raise FileNotFoundError(f"Datalist file not found: '{dataset_dir}'.")
        return dataset_dir
    path = os.path.join(dataset_dir, datalist_name)
    if not os.path.isfile(path):
        what = "folder does not exist" if not os.path.isdir(dataset_dir) else f"folder has no '{datalist_name}'"
        raise FileNotFoundError(
            f"Expected a datalist at '{path}' but the {what}. Set dataset_dir to a folder holding '{datalist_name}', "
            f"to a .json datalist, or leave it empty to use the '{demo}' demo data."
        )
    return path


def _demo_settings(demo_dir: str) -> str:
    """The settings a demo folder was generated with, from the parameters file its generator writes."""
    for name in ("demo_params.json", "echo_demo_params.json"):
        try:
            with open(os.path.join(demo_dir, name)) as f:
                params = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(params, dict):
            return "generated with " + ", ".join(f"{k}={v!r}" for k, v in params.items() if k not in ("generator",))
    return "generation settings unknown"


def items_fingerprint(items: Sequence[Mapping], datalist: str | None = None, **fields: Any) -> dict:
    """What a training run is trained on, for :class:`~monai_contrastive.handlers.ResumableCheckpoint`'s
    ``fingerprint``: resuming a checkpoint made on other data (another ``dataset_dir``, fold, datalist edit) is then
    refused instead of silently continuing the old run.

    Args:
        items: the training items (``train#dataset#data``).
        datalist: the datalist file they were read from (recorded as an absolute path).
        fields: other data-defining settings, e.g. ``fold=0, num_folds=4, fold_seed=0`` (JSON-able values).

    Returns:
        ``{"datalist": ..., "num_items": N, "items_sha256": <hash of the items' content>, **fields}``; the hash
        covers every key and value of every item (image paths, labels, patient ids ...), in order.
    """
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps(dict(item), sort_keys=True, default=str).encode())
        digest.update(b"\n")
    out: dict[str, Any] = {}
    if datalist is not None:
        out["datalist"] = os.path.abspath(os.path.expanduser(os.fspath(datalist)))
    out["num_items"] = len(items)
    out["items_sha256"] = digest.hexdigest()
    out.update(json.loads(json.dumps(fields, default=str)))
    return out


def check_loader_batches(loader: Any, what: str = "training") -> Any:
    """Return ``loader`` when it yields at least one batch; otherwise raise, saying how many items there are and
    what batch size was asked (a run that would train 0 iterations must not exit as if it had trained).

    Use it where the trainer takes its loader, e.g. ``"train_data_loader": "$monai_contrastive.data.
    check_loader_batches(@train#dataloader)"``.

    Raises:
        ValueError: ``len(loader) == 0`` (fewer items than one batch with ``drop_last``, or no item at all).
    """
    try:
        n = len(loader)
    except TypeError:  # an iterable dataset without a length: cannot tell before iterating
        return loader
    if n > 0:
        return loader
    dataset = getattr(loader, "dataset", None)
    sampler = getattr(loader, "sampler", None)
    num_items = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else "?"
    batch_size = getattr(loader, "batch_size", None)
    drop_last = getattr(loader, "drop_last", False)
    per_rank = ""
    if sampler is not None and hasattr(sampler, "num_replicas") and hasattr(sampler, "__len__"):
        per_rank = f" ({len(sampler)} per rank on {sampler.num_replicas} ranks)"
    hint = f"lower batch_size to at most {num_items}" if isinstance(num_items, int) and num_items else "add items"
    raise ValueError(
        f"the {what} data loader yields no batch: {num_items} {what} items{per_rank}, batch_size {batch_size}"
        f"{' with drop_last=True' if drop_last else ''}. The run would train 0 iterations; {hint} "
        "(e.g. --batch_size) or give more items."
    )


def share_worker_tempdir() -> str:
    """Create this process's ``multiprocessing`` temporary folder now, before any DataLoader worker starts.

    A worker that sends tensors to the main process makes a ``pymp-*`` folder in the temporary directory (for the
    file-descriptor passing of shared memory) unless it inherits its parent's. Workers still alive at exit
    (``persistent_workers``, or an iterator that Ignite keeps between epochs) are terminated without cleaning up, so
    every run left such folders behind. Forked workers reuse the folder made here, and this process removes it at
    exit. Call it first in a bundle's ``initialize``; returns the folder.
    """
    import multiprocessing.util

    return multiprocessing.util.get_temp_dir()


def _demo_generator(demo: str) -> Callable[..., str]:
    from monai_contrastive.data import DEMO_GENERATORS  # the registry lives in the package __init__

    if demo not in DEMO_GENERATORS:
        raise ValueError(f"Unknown demo dataset '{demo}'; available: {sorted(DEMO_GENERATORS)}.")
    module_name, _, function_name = DEMO_GENERATORS[demo].rpartition(".")
    # imported on use: a generator may need packages the other demos do not
    return getattr(importlib.import_module(module_name), function_name)
