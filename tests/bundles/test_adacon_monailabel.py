"""The AdaCon regression bundles in a real MONAI Label server (the plugin's app): /info, /infer (values as JSON, an
AVI study for echo) and /train (a clear "not supported"), served from the exported zoo bundles' models/model.pt."""

from __future__ import annotations

import json
import shutil

import pytest

from monai_contrastive import cli

from .. import zoo_harness as zh
from ..monailabel_harness import PLUGIN_APP, MonaiLabelError, monailabel_server

BMD, ECHO = "adacon_bmd_xray", "adacon_lvef_echo"


@pytest.fixture(scope="module")
def bundles(ml_python, tmp_path_factory):
    """``{name: (exported bundle, {file name: value the bundle's own inference gives})}``."""
    root = tmp_path_factory.mktemp("adacon_ml")
    out = {}
    for name in (BMD, ECHO):
        src = zh.train_tiny(name, root / "src")
        cli.main(["export", str(src), "--out", str(root / "zoo"), "--torchscript", "False"])
        dst = root / "zoo" / name
        zh.set_inference_defaults(src, name)
        zh.set_inference_defaults(dst, name)  # MONAI Label runs inference.json as it is
        wf = zh._workflow(src, ["inference.json"], "infer", **zh.infer_settings(name))
        wf.run()
        test_items = wf.parser.get_parsed_content("test_items")
        wf.finalize()
        own = zh.read_predictions(src / "eval" / "predictions.csv")
        assert len(own) == len(test_items) > 0
        out[name] = (dst, src, own)
    return out


@pytest.mark.monailabel
def test_monailabel_regression_bundles(bundles, ml_python, tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    picked = {}
    for name, (_, src, own) in bundles.items():
        files = sorted(own)[:1] if name == BMD else sorted(own)[:2]
        for f in files:
            found = next(p for p in (src / "demo_data").rglob(f))
            shutil.copy(found, studies / f)
        picked[name] = files

    bmd_dir, echo_dir = bundles[BMD][0], bundles[ECHO][0]
    with monailabel_server(
        str(bmd_dir),
        str(studies),
        BMD,
        tmp_path / "server",
        python=ml_python,
        app=PLUGIN_APP,
        more_bundles={ECHO: str(echo_dir)},
    ) as client:
        info = client.info()
        for name, channel in ((BMD, "bone mineral density (g/cm^2)"), (ECHO, "left-ventricular ejection fraction (%)")):
            model = info["models"][name]
            assert model["type"] == "regression", model
            assert model["labels"] == {channel: 0}, model
        assert BMD not in info.get("trainers", {}) and ECHO not in info.get("trainers", {})
        ids = {d for d in client.datastore()["objects"]}
        assert {f.rsplit(".", 1)[0] for fs in picked.values() for f in fs} <= ids, ids

        for name, files in picked.items():
            own = bundles[name][2]
            for f in files:
                res = client.infer_json(name, f.rsplit(".", 1)[0], timeout=600)
                (pred,) = res["prediction"]
                assert pred["idx"] == 0 and pred["label"] == next(iter(res["values"]))
                # the server gives what the bundle's own inference gives on the same file
                assert pred["score"] == pytest.approx(own[f], abs=1e-4), (name, f, res)
                assert res["values"][pred["label"]] == pred["score"]

        # training a regression bundle from MONAI Label: a clear refusal, and the server stays up
        with pytest.raises(MonaiLabelError) as err:
            client.train(BMD, {"max_epochs": 1})
        assert err.value.status == 501
        detail = json.loads(err.value.body)["detail"]
        assert "not supported" in detail and "configs/train.json" in detail
        assert client.info()["models"][BMD]["type"] == "regression"
