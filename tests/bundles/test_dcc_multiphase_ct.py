"""The DCC-CL multi-phase CT bundle through MONAI's bundle API on tiny synthetic CT: coarse -> pretrain -> train ->
evaluate -> inference, and bad input stopped with the file named."""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.networks.nets import UNet

from monai_contrastive.networks import dcc_segmentation_net

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "dcc_multiphase_ct")

TINY = {
    "demo_kwargs": {"num_labelled": 7, "num_unlabelled": 1, "matrix": 48, "num_validation": 2, "num_test": 2},
    "coarse_size": [32, 32, 8],
    "coarse_channels": [4, 8, 16],
    "encoder_name": "resnet18",
    "patch_size": 32,
    "num_workers": 0,
    "amp": False,
    "device": "cpu",
}
PRETRAIN = {"proj_hidden": 64, "proj_dim": 32, "patches_per_organ": 2, "batch_size": 4}
FINE = {"patches_per_organ": 2, "val_patches_per_organ": 1, "batch_size": 4, "coarse_sw_batch_size": 64}
INFER = {k: TINY[k] for k in ("demo_kwargs", "coarse_size", "coarse_channels", "encoder_name", "patch_size", "amp")}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle") / "dcc_multiphase_ct"
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache"))
    return str(root)


def _record_losses(trainer) -> list[float]:
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    return losses


def _epoch_means(losses: list[float], epochs: int) -> list[float]:
    per = len(losses) // epochs
    return [float(np.mean(losses[i * per : (i + 1) * per])) for i in range(epochs)]


def test_coarse_pretrain_train_evaluate_infer(bundle, workflow, tmp_path):
    torch.set_num_threads(2)
    models = os.path.join(bundle, "models")

    # 1. coarse 3D segmentation: 3 training volumes, batch 2 -> 2 iterations per epoch; its own test Dice reported
    wf = workflow(bundle, ["coarse.json"], **TINY, epochs=6, val_interval=3, batch_size=2, learning_rate=0.02)
    losses = _record_losses(wf.parser.get_parsed_content("train#trainer"))
    wf.run()
    wf.finalize()
    assert len(losses) == 12
    first, *_, last = _epoch_means(losses, 6)
    assert last < first, losses
    coarse = UNet(3, 1, 14, [4, 8, 16], [2, 2], num_res_units=2, norm="instance")
    coarse.load_state_dict(torch.load(os.path.join(models, "coarse.pt"), weights_only=True))
    with open(os.path.join(bundle, "eval", "coarse", "seg_metrics.json")) as f:
        report = json.load(f)
    assert report["n_cases"] == 2 and 0.0 <= report["overall"]["dice"]["mean"] <= 1.0
    assert len(report["phases"]) >= 1

    # 2. DCC pretraining on organ patches of the training + unlabelled volumes
    wf = workflow(bundle, ["pretrain.json"], **TINY, **PRETRAIN, epochs=2)
    dataset = wf.parser.get_parsed_content("train#patches")
    n_iter = len(dataset) // PRETRAIN["batch_size"]  # drop_last
    assert n_iter >= 1
    net = wf.parser.get_parsed_content("network")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    losses = _record_losses(wf.parser.get_parsed_content("train#trainer"))
    wf.run()
    wf.finalize()
    assert len(losses) == 2 * n_iter and all(np.isfinite(losses))
    saved = torch.load(os.path.join(models, "pretrained_dcc.pt"), weights_only=True)
    changed = [k for k, v in saved.items() if k.endswith("weight") and not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.encoder.") for k in changed)

    # 3. fine-tuning DeepLabV3+ from the DCC encoder (the encoder's tensors are the pretrained ones at the start)
    wf = workflow(bundle, ["train.json"], **TINY, **FINE, epochs=3, learning_rate=0.001)
    seg = wf.parser.get_parsed_content("network")
    enc = {k[len("encoder.encoder.") :]: v for k, v in saved.items() if k.startswith("encoder.encoder.")}
    for k, v in enc.items():
        torch.testing.assert_close(seg.encoder.state_dict()[k], v)
    losses = _record_losses(wf.parser.get_parsed_content("train#trainer"))
    wf.run()
    wf.finalize()
    first, *_, last = _epoch_means(losses, 3)
    assert last < first, losses
    model = dcc_segmentation_net("resnet18")
    model.load_state_dict(torch.load(os.path.join(models, "model.pt"), weights_only=True))

    # 4. evaluation: coarse -> patches -> fine -> majority voting, per phase
    wf = workflow(bundle, ["train.json", "evaluate.json"], "eval", **TINY, **FINE)
    wf.run()
    wf.finalize()
    with open(os.path.join(bundle, "eval", "seg_metrics.json")) as f:
        report = json.load(f)
    assert report["n_cases"] == 2 and sum(p["n_cases"] for p in report["phases"].values()) == 2
    assert os.path.isfile(os.path.join(bundle, "eval", "organ_embeddings_pca.png"))

    # 5. inference on a folder of volumes: a label NIfTI in each input's space
    src = os.path.join(bundle, "demo_data", "imagesTs")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in sorted(os.listdir(src)):
        shutil.copy(os.path.join(src, name), inputs / name)
    out_dir = tmp_path / "out"
    wf = workflow(bundle, ["inference.json"], "infer", **INFER, input_dir=str(inputs), output_dir=str(out_dir))
    wf.run()
    wf.finalize()
    for name in sorted(os.listdir(inputs)):
        img = nib.load(str(inputs / name))
        pred = nib.load(str(out_dir / f"{name[: -len('.nii.gz')]}_seg.nii.gz"))
        assert pred.shape == img.shape
        np.testing.assert_allclose(pred.affine, img.affine, atol=1e-4)
        labels = np.unique(np.asarray(pred.dataobj))
        assert labels.min() >= 0 and labels.max() < 14


def _chain(e: BaseException) -> list[str]:
    out = []
    while e is not None:
        out.append(str(e))
        e = e.__cause__ or e.__context__
    return out


def _demo_items(bundle: str, workflow) -> tuple[str, dict]:
    wf = workflow(bundle, ["coarse.json"], **TINY)
    path = wf.parser.get_parsed_content("datalist_file")
    with open(path) as f:
        return os.path.dirname(path), json.load(f)


def test_volume_without_phase_is_named_for_phase_objectives(bundle, workflow, tmp_path):
    root, data = _demo_items(bundle, workflow)
    torch.save(UNet(3, 1, 14, [4, 8, 16], [2, 2], num_res_units=2, norm="instance").state_dict(), tmp_path / "c.pt")
    item = {k: os.path.join(root, v) for k, v in data["training"][0].items() if k in ("image", "label")}
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [item], "unlabelled": [], "labels": data["labels"]}))
    wf = workflow(
        bundle,
        ["pretrain.json"],
        **TINY,
        **PRETRAIN,
        dataset_dir=str(tmp_path),
        coarse_ckpt=str(tmp_path / "c.pt"),
        pretrain_method="agcl",
        cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(Exception) as info:
        wf.parser.get_parsed_content("train#patches")
    msgs = _chain(info.value)
    assert any(os.path.basename(item["image"]) in m and "phase" in m for m in msgs), msgs


def test_coarse_checkpoint_with_another_organ_count_is_named(bundle, workflow, tmp_path):
    torch.save(UNet(3, 1, 6, [4, 8, 16], [2, 2], num_res_units=2, norm="instance").state_dict(), tmp_path / "c5.pt")
    wf = workflow(bundle, ["train.json"], **TINY, **FINE, coarse_ckpt=str(tmp_path / "c5.pt"))
    with pytest.raises(Exception) as info:
        wf.parser.get_parsed_content("coarse_network")
    msgs = _chain(info.value)
    assert any("c5.pt" in m and "5 organs" in m and "13 organs" in m for m in msgs), msgs


def test_truncated_volume_is_named(bundle, workflow, tmp_path):
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    noisy = np.random.default_rng(0).integers(-1000, 1000, (40, 40, 12)).astype(np.int16)
    nib.save(nib.Nifti1Image(noisy, affine), str(tmp_path / "full.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 12), np.uint8), affine), str(tmp_path / "lab.nii.gz"))
    whole = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(whole[: len(whole) // 2])
    datalist = {
        "training": [{"image": "cut.nii.gz", "label": "lab.nii.gz", "phase": "arterial"}],
        "validation": [{"image": "full.nii.gz", "label": "lab.nii.gz", "phase": "arterial"}],
        "testing": [{"image": "full.nii.gz", "label": "lab.nii.gz", "phase": "arterial"}],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(datalist))
    wf = workflow(bundle, ["coarse.json"], **TINY, dataset_dir=str(tmp_path))
    with pytest.raises(Exception) as info:
        wf.parser.get_parsed_content("train#dataset")
    assert any("cut.nii.gz" in m for m in _chain(info.value)), _chain(info.value)


def test_verify_net_in_out(bundle):
    """As zoo CI runs it (n=1): the served DeepLabV3+ maps (1, 2, 32n, 32n) patches to (1, 1, 32n, 32n) logits."""
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=os.path.join(bundle, "configs", "metadata.json"),
        config_file=os.path.join(bundle, "configs", "inference.json"),
        n=2,
        device="cpu",
        bundle_root=bundle,
        encoder_name="resnet18",
    )


def test_every_config_loads_volumes_with_named_errors(bundle):
    """Plain LoadImaged does not name a truncated .nii.gz (nibabel fails lazily): every config uses LoadVolumed."""
    for name in ("coarse.json", "pretrain.json", "train.json", "evaluate.json", "inference.json"):
        text = open(os.path.join(bundle, "configs", name)).read()
        assert '"LoadImaged"' not in text, name
        assert "monai_contrastive.transforms.ct.LoadVolumed" in text, name


def test_no_code_path_downloads_weights(monkeypatch):
    """encoder_weights=None everywhere: building the pretraining and segmentation networks touches no URL."""
    import torch.hub

    from monai_contrastive.networks import dcc_pretraining_net

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args} {kwargs}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    try:
        import huggingface_hub

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    except ImportError:
        pass
    for method in ("simclr", "ce", "agcl", "dcc"):
        assert isinstance(dcc_pretraining_net(method, "resnet50"), torch.nn.Module)
    net = dcc_segmentation_net("resnet50", encoder_weights="imagenet")  # overridden: never downloaded
    assert net.eval()(torch.zeros(1, 2, 64, 64)).shape == (1, 1, 64, 64)
