"""MONAI Label app for the monai-contrastive bundles: the ``monaibundle`` sample app, plus regression bundles.

A bundle whose first output in ``configs/metadata.json`` has ``"format": "regression"`` (the AdaCon BMD and LVEF
bundles) gets a :class:`RegressionBundleInferTask`: ``/info`` types it ``"regression"``, and ``/infer`` runs the
bundle's own ``preprocessing`` / ``network_def`` with ``models/model.pt`` / ``inferer`` / ``postprocessing`` and
returns the predicted value(s) as JSON, with no resizing to the image and no label image::

    {"prediction": [{"idx": 0, "label": "bone mineral density (g/cm^2)", "score": 0.93}],
     "values": {"bone mineral density (g/cm^2)": 0.93}, ...}

(``score`` is the regression value, in the units of the channel name; the list has the shape of MONAI Label's
classification answer so existing clients read it.) Ask for it with ``output=json`` (or no ``output``).

``/train`` of a regression bundle answers HTTP 501 with the reason: MONAI Label builds its training list from label
images in the datastore, and these bundles learn from numbers (a datalist of scalar labels); train them with
``python -m monai.bundle run --config_file configs/train.json`` (or ``monai-contrastive train``) and copy
``models/model.pt`` (or the exported bundle) into the app.

Every other bundle (segmentation) is served as the ``monaibundle`` sample app serves it: ``BundleInferTask`` and
``BundleTrainTask``. ``/info`` takes a segmentation bundle's labels from the first output's ``channel_def``, which
names the label values when the network outputs one channel per class. A bundle whose network works per patch and
whose inference fuses the patches into the label map (the DCC-CL bundle: one organ-patch logit per forward, a
coarse-to-fine inferer writes the 14-class map) declares the values of that map in a top-level ``label_map_def`` of
``configs/metadata.json``, in ``channel_def``'s form (``{"0": "background", "1": "liver", ...}``); the stock app
would list the patch output's one channel. Such a bundle gets a :class:`LabelMapBundleInferTask`: a ``segmentation``
model whose ``/info`` labels are those values (background left out, as for ``channel_def``); ``/infer`` (the label
map in the image's space) and ``/train`` are those of any segmentation bundle.

The datastore also lists the file types the served bundles read: ``*.avi`` for a video input, ``*.dcm`` for X-ray.

Start it on a copy of this folder with the bundles (or exported bundles) under ``<app>/model/<name>/``::

    monailabel start_server --app <app> --studies <folder> --conf models adacon_bmd_xray,adacon_lvef_echo \\
        --conf zoo_source github
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Tuple

import monailabel
import torch
from fastapi import HTTPException
from monai.transforms import SaveImaged
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import get_bundle_models, strtobool

logger = logging.getLogger(__name__)

REGRESSION = "regression"
# top-level metadata.json key: {"value": "name"} of the label map a per-patch segmentation bundle's inference writes
LABEL_MAP_DEF = "label_map_def"


def bundle_metadata(path: str) -> dict:
    try:
        with open(os.path.join(path, "configs", "metadata.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def is_regression_bundle(path: str) -> bool:
    """Whether the bundle's first declared output is a regression value."""
    outputs = bundle_metadata(path).get("network_data_format", {}).get("outputs", {})
    first = next(iter(outputs.values()), {})
    return str(first.get("format", "")).lower() == REGRESSION


def label_map_labels(path: str) -> Dict[str, int]:
    """``{name: value}`` of the label map declared in the bundle's ``label_map_def`` (background left out, names
    lowercased as MONAI Label does with ``channel_def``); empty when the bundle declares none.

    Raises:
        ValueError: ``label_map_def`` is not a ``{"<int>": "<name>"}`` object.
    """
    label_def = bundle_metadata(path).get(LABEL_MAP_DEF)
    if label_def is None:
        return {}
    try:
        labels = {str(v).lower(): int(k) for k, v in dict(label_def).items()}
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{os.path.join(path, 'configs', 'metadata.json')}: {LABEL_MAP_DEF} must map label values to names, e.g."
            f' {{"0": "background", "1": "liver"}}; got {label_def!r}'
        ) from e
    return {k: v for k, v in labels.items() if k != "background"}


def _input_file_patterns(path: str) -> list:
    """Datastore patterns for the files a bundle's input is read from (beyond MONAI Label's defaults)."""
    image = next(iter(bundle_metadata(path).get("network_data_format", {}).get("inputs", {}).values()), {})
    if str(image.get("type", "")).lower() == "video":
        return ["*.avi"]
    if str(image.get("modality", "")).upper() in ("XR", "CR", "DX"):
        return ["*.dcm", "*.png", "*.jpg", "*.jpeg"]
    return []


class RegressionBundleInferTask(BundleInferTask):
    """The bundle infer task for a regression output: no restore-to-image step, no image writer, a JSON answer."""

    def __init__(self, path: str, conf: Dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("post_filter", [SaveImaged])
        super().__init__(path, conf, type=REGRESSION, add_post_restore=False, **kwargs)

    def writer(self, data: Dict[str, Any], extension=None, dtype=None) -> Tuple[Any, Any]:
        pred = data[self.output_label_key]
        values = torch.as_tensor(pred.as_tensor() if hasattr(pred, "as_tensor") else pred).detach().float().cpu()
        names = {int(v): k for k, v in (self.labels or {}).items()}
        prediction = [
            {"idx": i, "label": names.get(i, f"output_{i}"), "score": float(x)} for i, x in enumerate(values.flatten())
        ]
        return None, {"prediction": prediction, "values": {p["label"]: p["score"] for p in prediction}}


class LabelMapBundleInferTask(BundleInferTask):
    """The bundle infer task of a segmentation bundle whose label map is not its network output's ``channel_def`` (a
    per-patch network): type ``segmentation``, labels from the metadata's ``label_map_def``."""

    def __init__(self, path: str, conf: Dict[str, str], labels: Dict[str, int], **kwargs: Any) -> None:
        kwargs.setdefault("type", InferType.SEGMENTATION)
        super().__init__(path, conf, **kwargs)
        if self.is_valid():
            logger.info(f"Model: {os.path.basename(path)}; labels of the label map ({LABEL_MAP_DEF}): {labels}")
            self.labels = dict(labels)


class MyApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        self.model_dir = os.path.join(app_dir, "model")
        self.models = get_bundle_models(app_dir, conf)
        self.regression_models = {n for n, p in self.models.items() if is_regression_bundle(p)}
        for p in self.models.values():
            for pattern in _input_file_patterns(p):
                if pattern not in settings.MONAI_LABEL_DATASTORE_FILE_EXT:
                    settings.MONAI_LABEL_DATASTORE_FILE_EXT.append(pattern)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"MONAILabel - monai-contrastive bundles ({monailabel.__version__})",
            description="monai-contrastive bundles: segmentation and regression (AdaCon BMD, LVEF)",
            version=monailabel.__version__,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for n, b in self.models.items():
            label_map = {} if n in self.regression_models else label_map_labels(b)
            if n in self.regression_models:
                task: BundleInferTask = RegressionBundleInferTask(b, self.conf)
            elif label_map:
                task = LabelMapBundleInferTask(b, self.conf, label_map)
            else:
                task = BundleInferTask(b, self.conf)
            if not task.is_valid():
                logger.warning(f"+++ Bundle {n} at {b} is not valid (no inference config or no models/model.pt)")
                continue
            logger.info(f"+++ Adding Inferer:: {n} => {task}")
            infers[n] = task
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        trainers: Dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for n, b in self.models.items():
            if n in self.regression_models:
                logger.info(f"+++ No Trainer for regression bundle {n} (train with configs/train.json)")
                continue
            t = BundleTrainTask(b, self.conf)
            if not t or not t.is_valid():
                continue
            logger.info(f"+++ Adding Trainer:: {n} => {t}")
            trainers[n] = t
        return trainers

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def train(self, request: Dict[str, Any]) -> Any:
        model = request.get("model")
        if model in self.regression_models:
            raise HTTPException(
                status_code=501,
                detail=(
                    f"training {model!r} from MONAI Label is not supported: MONAI Label builds its training list from "
                    "label images in the datastore, and this regression bundle learns from numbers. Train it with "
                    "`python -m monai.bundle run --config_file configs/train.json` and a datalist of scalar labels "
                    "(`monai-contrastive train`), then serve the new models/model.pt."
                ),
            )
        return super().train(request)
