from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from monai_contrastive.io import (
    apply_umask,
    atomic_path,
    atomic_save,
    atomic_write,
    atomic_write_json,
    read_state_dict,
)


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_atomic_save_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    atomic_save({"a": 1}, path)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"b": _Unpicklable()}, path)
    assert torch.load(path) == {"a": 1}
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


def test_atomic_write_json_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = str(tmp_path / "report.json")
    atomic_write_json({"dice": 0.5}, path, indent=1)
    with open(path) as f:
        assert f.read() == '{\n "dice": 0.5\n}'
    with pytest.raises(TypeError):
        atomic_write_json({"dice": object()}, path)  # not JSON-able: fails half-way through json.dump
    with open(path) as f:
        assert json.load(f) == {"dice": 0.5}
    assert os.listdir(tmp_path) == ["report.json"]


def test_atomic_write_and_atomic_path(tmp_path):
    path = str(tmp_path / "sub" / "rows.csv")
    atomic_write(path, lambda f: f.write("a,b\n1,2\n"), suffix=".csv")  # the folder is created
    with open(path) as f:
        assert f.read() == "a,b\n1,2\n"

    def fail(f):
        f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    with open(path) as f:
        assert f.read() == "a,b\n1,2\n"

    target = str(tmp_path / "image.png")
    with atomic_path(target, suffix=".png") as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".png") and tmp != target
        with open(tmp, "wb") as f:
            f.write(b"png")
    with open(target, "rb") as f:
        assert f.read() == b"png"
    with pytest.raises(ValueError):
        with atomic_path(target, tmp_path=str(tmp_path / ".image.123.tmp")) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"other")
            raise ValueError("writer failed")
    with open(target, "rb") as f:
        assert f.read() == b"png"
    assert sorted(os.listdir(tmp_path)) == ["image.png", "sub"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    """mkstemp makes 0600 files; checkpoints, models and caches must get the usual mode (0666 less the umask)."""
    old = os.umask(umask)
    try:
        atomic_save({"a": 1}, str(tmp_path / "m.pt"))
        atomic_write_json({"a": 1}, str(tmp_path / "m.json"))
        with atomic_path(str(tmp_path / "m.png")) as tmp:
            open(tmp, "wb").close()
        raw = tmp_path / "raw"
        raw.write_bytes(b"")
        os.chmod(raw, 0o600)
        apply_umask(str(raw))
    finally:
        os.umask(old)
    for name in ("m.pt", "m.json", "m.png", "raw"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask, name


def test_read_state_dict_key_and_prefix(tmp_path):
    weights = {"encoder.w": torch.ones(2), "encoder.b": torch.zeros(1), "head.w": torch.full((3,), 2.0)}
    ckpt = str(tmp_path / "ckpt.pt")
    plain = str(tmp_path / "plain.pt")
    torch.save({"model": weights, "epoch": 3}, ckpt)
    torch.save(weights, plain)

    assert sorted(read_state_dict(ckpt, "model")) == ["encoder.b", "encoder.w", "head.w"]
    assert read_state_dict(ckpt)["epoch"] == 3  # no key: the whole file
    # key_optional: a plain state dict (a served models/model.pt) loads as it is
    assert sorted(read_state_dict(plain, "model", key_optional=True)) == ["encoder.b", "encoder.w", "head.w"]
    enc = read_state_dict(ckpt, "model", prefix="encoder.")
    assert sorted(enc) == ["b", "w"] and torch.equal(enc["w"], torch.ones(2))


def test_read_state_dict_errors_name_the_file_and_the_key(tmp_path):
    plain = str(tmp_path / "plain.pt")
    torch.save({"w": torch.ones(1)}, plain)
    with pytest.raises(KeyError) as info:
        read_state_dict(plain, "state_dict", what="pretrained weights")
    assert plain in str(info.value) and "'state_dict'" in str(info.value) and "'w'" in str(info.value)
    assert "pretrained weights" in str(info.value)
    with pytest.raises(ValueError, match="'encoder.'") as info:
        read_state_dict(plain, prefix="encoder.")
    assert plain in str(info.value)
    missing = str(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="fold 2: checkpoint") as info:
        read_state_dict(missing, "model", what="fold 2: checkpoint")
    assert missing in str(info.value)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a weights file")
    with pytest.raises(RuntimeError, match="cannot read") as info:
        read_state_dict(str(broken))
    assert str(broken) in str(info.value)


def test_read_state_dict_runs_no_code_from_the_file(tmp_path):
    """weights_only=True: a pickle that would construct an arbitrary object is refused."""
    path = str(tmp_path / "evil.pt")
    torch.save({"model": {"w": torch.ones(1)}, "extra": _Plain()}, path)
    with pytest.raises(RuntimeError, match="cannot read"):
        read_state_dict(path, "model")


class _Plain:
    pass
