"""Video transforms: loading, clip sampling (EchoNet-Dynamic rules), normalisation, frame jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import Dataset, MetaTensor, ThreadDataLoader, list_data_collate
from monai.data.utils import worker_init_fn
from monai.transforms import BorderPad, BorderPadd, Compose, CopyItemsd, RandSpatialCrop, RandSpatialCropd

from monai_contrastive.data import video as video_data
from monai_contrastive.data.echonet import load_echonet_filelist
from monai_contrastive.data.synthetic_echo import generate_echo_demo
from monai_contrastive.data.video import read_video
from monai_contrastive.data.video_stats import fit_video_normalization, save_normalization
from monai_contrastive.transforms.video import (
    AllClips,
    AllClipsd,
    ClipSample,
    ClipSampled,
    LoadVideo,
    LoadVideod,
    NormalizeVideo,
    NormalizeVideod,
    RandClipSample,
    RandClipSampled,
    RandClipSampleD,
    RandClipSampleDict,
    RandClipViews,
    RandClipViewsd,
    RandFrameJitter,
    RandFrameJitterd,
    clip_starts,
)

cv2 = pytest.importorskip("cv2")


def counting_video(num_frames: int, size: int = 4) -> np.ndarray:
    """(3, T, size, size) uint8 video whose frame t has value t + 1 in every pixel (0 is reserved for padding)."""
    return np.broadcast_to(
        (np.arange(num_frames) + 1).astype(np.uint8)[None, :, None, None], (3, num_frames, size, size)
    ).copy()


def write_counting_avi(path: str, num_frames: int, size: int = 16) -> str:
    """Lossless (FFV1) AVI of :py:func:`counting_video`, so decoded values are exact."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"FFV1"), 50.0, (size, size), True)
    assert writer.isOpened()
    for t in range(num_frames):
        writer.write(np.full((size, size, 3), t + 1, np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    return generate_echo_demo(str(tmp_path_factory.mktemp("echo") / "EchoNet"), num_videos=6, seed=0, frames=(64, 80))


def frame_ids(clip) -> np.ndarray:
    """Frame value (t + 1, 0 for padding) of each frame of a (C, L, H, W) clip."""
    clip = clip.numpy() if isinstance(clip, torch.Tensor) else clip
    assert (clip == clip[:1, :, :1, :1]).all()  # every pixel of a frame equal
    return clip[0, :, 0, 0].astype(int)


# ---------------------------------------------------------------------------------------------- loading


def test_load_video_decodes_exact_frames(tmp_path):
    path = write_counting_avi(str(tmp_path / "count.avi"), 70)
    video = LoadVideo()(path)
    assert isinstance(video, MetaTensor) and video.dtype == torch.uint8 and video.shape == (3, 70, 16, 16)
    assert video.meta["filename_or_obj"] == path and video.meta["num_frames"] == 70
    np.testing.assert_array_equal(frame_ids(video), np.arange(70) + 1)
    as_float = LoadVideo(dtype=np.float32, as_tensor=False)(path)
    assert isinstance(as_float, np.ndarray) and as_float.dtype == np.float32 and as_float[0, 5, 0, 0] == 6.0


def test_load_video_through_cache(demo, tmp_path, monkeypatch):
    path = load_echonet_filelist(demo, "ALL")[0]["image"]
    reference = read_video(path)
    calls = []
    real = video_data.read_video
    monkeypatch.setattr(video_data, "read_video", lambda p: calls.append(p) or real(p))
    loader = LoadVideo(cache_dir=str(tmp_path / "cache"))
    for _ in range(3):
        np.testing.assert_array_equal(loader(path).numpy(), reference)
    assert len(calls) == 1


def test_load_videod_errors_name_key_and_file(tmp_path):
    bad = tmp_path / "broken.avi"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="LoadVideod: key 'image'.*broken.avi"):
        LoadVideod("image")({"image": str(bad), "label": 50.0})
    with pytest.raises(FileNotFoundError, match="key 'image'.*gone.avi"):
        LoadVideod("image")({"image": str(tmp_path / "gone.avi")})
    with pytest.raises(TypeError, match="key 'image'"):
        LoadVideod("image")({"image": 3})


def test_load_videod_numpy_meta(tmp_path):
    path = write_counting_avi(str(tmp_path / "count.avi"), 5)
    d = LoadVideod("image", as_tensor=False)({"image": path})
    assert isinstance(d["image"], np.ndarray) and d["image_meta_dict"]["filename_or_obj"] == path


# ---------------------------------------------------------------------------------------------- clip sampling


@pytest.mark.parametrize("as_tensor", [False, True])
def test_clip_sample_indices(as_tensor):
    video = counting_video(100)
    video = torch.as_tensor(video) if as_tensor else video
    clip = ClipSample(length=32, period=2, start=5)(video)
    assert type(clip) is type(video) and clip.shape == (3, 32, 4, 4)
    np.testing.assert_array_equal(frame_ids(clip), 5 + 2 * np.arange(32) + 1)
    np.testing.assert_array_equal(frame_ids(ClipSample(length=4, period=3, start=0)(video)), [1, 4, 7, 10])
    assert frame_ids(ClipSample(length=32, period=2, start=37)(video))[-1] == 100
    with pytest.raises(ValueError, match="start=38 is past the last valid start 37"):
        ClipSample(length=32, period=2, start=38)(video)


def test_rand_clip_sample_starts_cover_valid_range():
    video = counting_video(100)
    sampler = RandClipSample(length=32, period=2).set_random_state(0)
    starts = set()
    for _ in range(2000):
        ids = frame_ids(sampler(video))
        start = ids[0] - 1
        np.testing.assert_array_equal(ids, start + 2 * np.arange(32) + 1)
        assert start == sampler.start
        starts.add(start)
    assert starts == set(range(100 - 62))  # EchoNet: start ~ U{0, ..., T - (length - 1) * period - 1}
    a = [RandClipSample().set_random_state(7)(video)[0, 0, 0, 0] for _ in range(2)]
    assert a[0] == a[1]


def test_short_video_is_zero_padded_like_echonet(tmp_path):
    path = write_counting_avi(str(tmp_path / "short.avi"), 40)
    video = LoadVideo()(path)
    assert clip_starts(40, 32, 2) == (2, 64)  # padded to length * period frames
    clip = ClipSample(length=32, period=2, start=1)(video)
    ids = frame_ids(clip)
    np.testing.assert_array_equal(ids[:20], 2 + 2 * np.arange(20))  # frames 1, 3, ..., 39
    assert (clip[:, 20:] == 0).all()  # padding frames exactly zero
    sampler = RandClipSample(length=32, period=2).set_random_state(0)
    for _ in range(20):
        clip = sampler(video)
        assert clip.shape == (3, 32, 16, 16) and (clip[:, 20:] == 0).all() and sampler.start in (0, 1)
    all_clips = AllClips(length=32, period=2)(video)
    assert all_clips.shape == (2, 3, 32, 16, 16) and (all_clips[:, :, 20:] == 0).all()

    for transform in (RandClipSample(pad_short=False), ClipSample(pad_short=False), AllClips(pad_short=False)):
        with pytest.raises(ValueError, match="short.avi"):
            transform(video)
    with pytest.raises(ValueError, match="key 'image'.*short.avi.*40 frames"):
        RandClipSampled("image", pad_short=False)({"image": video})
    loaded = LoadVideod("image", as_tensor=False)({"image": path})  # numpy: the file comes from image_meta_dict
    with pytest.raises(ValueError, match="key 'image'.*short.avi"):
        ClipSampled("image", pad_short=False)(loaded)
    # inside Compose MONAI wraps the error in a RuntimeError whose cause is ours
    with pytest.raises(RuntimeError) as info:
        Compose([LoadVideod("image"), AllClipsd("image", pad_short=False)])({"image": path})
    assert "short.avi" in str(info.value.__cause__)


def test_pad_short_false_accepts_exact_span():
    # 63 frames hold exactly one 32-frame clip at period 2; EchoNet would still pad it to 64 frames (2 starts)
    video = counting_video(63)
    assert frame_ids(RandClipSample(pad_short=False)(video))[-1] == 63
    assert AllClips(pad_short=False)(video).shape[0] == 1
    padded = AllClips(pad_short=True)(video)
    assert padded.shape[0] == 2
    np.testing.assert_array_equal(frame_ids(padded[1])[-2:], [62, 0])  # frames 61, 63: 63 is padding


@pytest.mark.parametrize("as_tensor", [False, True])
def test_all_clips(as_tensor):
    video = counting_video(100)
    video = torch.as_tensor(video) if as_tensor else video
    clips = AllClips(length=32, period=2)(video)
    assert clips.shape == (38, 3, 32, 4, 4) and type(clips) is type(video)
    for v in (0, 17, 37):
        np.testing.assert_array_equal(frame_ids(clips[v]), v + 2 * np.arange(32) + 1)
    strided = AllClips(length=32, period=2, stride=4)(video)
    assert strided.shape[0] == 10
    np.testing.assert_array_equal(strided[:, 0, 0, 0, 0], np.arange(0, 38, 4) + 1)
    capped = AllClips(length=32, period=2, max_clips=5)
    np.testing.assert_array_equal(capped.starts(100), [0, 9, 18, 28, 37])
    assert capped(video).shape[0] == 5


def test_all_clipsd_meta(tmp_path):
    path = write_counting_avi(str(tmp_path / "count.avi"), 70)
    d = AllClipsd("image", stride=3)(LoadVideod("image")({"image": path}))
    assert d["image"].shape == (3, 3, 32, 16, 16) and d["image"].meta["clip_starts"] == [0, 3, 6]


def test_rand_clip_sampled_shared_draw_and_seeding():
    video = counting_video(100)
    t = RandClipSampled(["a", "b"], length=8, period=3)
    assert RandClipSampleD is RandClipSampleDict is RandClipSampled
    t.set_random_state(3)
    out = t({"a": video, "b": torch.as_tensor(video)})
    np.testing.assert_array_equal(frame_ids(out["a"]), frame_ids(out["b"]))  # one draw for all keys
    again = RandClipSampled(["a", "b"], length=8, period=3).set_random_state(3)({"a": video, "b": video})
    np.testing.assert_array_equal(frame_ids(again["a"]), frame_ids(out["a"]))
    with pytest.raises(ValueError, match="key 'b' has 50 frames"):
        t({"a": video, "b": counting_video(50)})


def test_dataloader_workers_draw_different_clips():
    """With MONAI's worker_init_fn the two DataLoader workers do not repeat each other's draws."""
    data = [{"image": counting_video(200)} for _ in range(8)]
    ds = Dataset(data, transform=RandClipSampled("image", length=4, period=1))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, num_workers=2, collate_fn=list_data_collate, worker_init_fn=worker_init_fn
    )
    first, second = (b["image"][:, 0, 0, 0, 0].tolist() for b in loader)
    assert first != second


# ---------------------------------------------------------------------------------------------- normalisation


def test_normalize_video_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (3, 6, 5, 5), dtype=np.uint8)
    mean, std = [30.0, 40.0, 50.0], [20.0, 25.0, 30.0]
    expected = (video.astype(np.float64) - np.reshape(mean, (3, 1, 1, 1))) / np.reshape(std, (3, 1, 1, 1))
    out = NormalizeVideo(mean, std)(video)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    out_t = NormalizeVideo(mean, std)(torch.as_tensor(video))
    assert out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), expected, rtol=1e-5, atol=1e-5)
    path = save_normalization(str(tmp_path / "norm.json"), mean, std)
    np.testing.assert_allclose(NormalizeVideo(path)(video), expected, rtol=1e-5, atol=1e-5)
    clips = np.stack([video, video])  # (V, C, T, H, W)
    np.testing.assert_allclose(NormalizeVideod("x", path)({"x": clips})["x"][1], expected, rtol=1e-5, atol=1e-5)
    float_in = video.astype(np.float32)
    NormalizeVideo(mean, std)(float_in)
    np.testing.assert_array_equal(float_in, video)  # input untouched


def test_normalize_video_errors(tmp_path):
    path = write_counting_avi(str(tmp_path / "count.avi"), 3)
    video = LoadVideo()(path)
    with pytest.raises(ValueError, match="count.avi.*3 channels but the statistics have 2"):
        NormalizeVideo([1.0, 2.0], [1.0, 1.0])(video)
    with pytest.raises(ValueError, match="key 'image'"):
        NormalizeVideod("image", [1.0, 2.0], [1.0, 1.0])({"image": video.numpy()})
    with pytest.raises(ValueError, match="std > 0"):
        NormalizeVideo([1.0, 2.0, 3.0], [1.0, 0.0, 1.0])


# ---------------------------------------------------------------------------------------------- frame jitter


def test_frame_jitter_with_monai_pad_and_crop():
    """EchoNet's ``pad=12``: MONAI BorderPad(0, 12, 12) + RandSpatialCrop(-1, 112, 112) on (C, T, H, W)."""
    rng = np.random.default_rng(0)
    clip = torch.as_tensor(rng.standard_normal((3, 32, 112, 112)).astype(np.float32))
    pad = BorderPad(spatial_border=(0, 12, 12))
    crop = RandSpatialCrop(roi_size=(-1, 112, 112), random_size=False)
    crop.set_random_state(0)
    padded = pad(clip)
    assert padded.shape == (3, 32, 136, 136) and (padded[:, :, :12] == 0).all()
    offsets = set()
    for _ in range(50):
        out = crop(padded)
        assert out.shape == (3, 32, 112, 112)
        # a shifted copy of the clip, the same shift for every frame and channel, zeros where it left the frame
        y, x = (padded[0, 0] == out[0, 0, 56, 56]).nonzero()[0].tolist()  # values are unique
        i, j = y - 56, x - 56
        assert 0 <= i <= 24 and 0 <= j <= 24
        assert torch.equal(out, padded[:, :, i : i + 112, j : j + 112])  # noqa: E203
        offsets.add((i, j))
    assert len(offsets) > 20

    d = {"image": clip, "image_2": clip.clone()}
    views = ("image", "image_2")
    jitter = Compose(
        [BorderPadd(views, spatial_border=(0, 12, 12))]
        + [RandSpatialCropd(k, roi_size=(-1, 112, 112), random_size=False) for k in views]
    ).set_random_state(1)
    out = jitter(d)
    assert out["image"].shape == out["image_2"].shape == (3, 32, 112, 112)
    assert not torch.equal(out["image"], out["image_2"])  # independent instances: independent offsets


@pytest.mark.parametrize("as_tensor", [False, True])
def test_rand_frame_jitter_equals_monai_pad_then_crop(as_tensor):
    """RandFrameJitter(pad, value) == BorderPad(0, pad, pad, value) then the crop at the drawn offset, on uint8."""
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (3, 5, 20, 24), dtype=np.uint8)
    fill = [10, 20, 30]
    padded = np.stack([np.pad(clip[c], ((0, 0), (4, 4), (4, 4)), constant_values=fill[c]) for c in range(3)])
    jitter = RandFrameJitter(pad=4, value=fill).set_random_state(0)
    x = torch.as_tensor(clip) if as_tensor else clip
    shifts = set()
    for _ in range(1000):
        out = jitter(x)
        assert type(out) is type(x) and out.dtype == x.dtype and out.shape == x.shape
        i, j = jitter.shift[0] + 4, jitter.shift[1] + 4  # offset of the crop in the padded frame
        out = out.numpy() if as_tensor else out
        np.testing.assert_array_equal(out, padded[:, :, i : i + 20, j : j + 24])  # noqa: E203
        shifts.add(jitter.shift)
    assert shifts == {(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)}  # uniform over 0 .. 2 * pad
    # the same as MONAI's pad + crop for one draw
    mon = RandSpatialCrop(roi_size=(-1, 20, 24), random_size=False)
    ref = mon(BorderPad(spatial_border=(0, 4, 4))(torch.as_tensor(clip)))
    assert ref.shape == out.shape
    assert RandFrameJitter(pad=4, prob=0.0)(clip) is clip
    with pytest.raises(ValueError, match="one per channel"):
        RandFrameJitter(pad=2, value=[1, 2])(clip)


def test_rand_frame_jitterd_aligns_keys_and_names_the_file():
    clip = np.arange(2 * 3 * 8 * 8, dtype=np.uint8).reshape(2, 3, 8, 8)
    jitter = RandFrameJitterd(("image", "mask"), pad=3).set_random_state(1)
    for _ in range(10):
        out = jitter({"image": clip, "mask": clip.copy()})
        np.testing.assert_array_equal(out["image"], out["mask"])
    with pytest.raises(ValueError, match="key 'image'.*clip.avi"):
        jitter({"image": np.zeros((4, 4), np.uint8), "image_meta_dict": {"filename_or_obj": "clip.avi"}, "mask": clip})


@pytest.mark.parametrize("as_tensor", [False, True])
def test_pad_value_per_channel(as_tensor):
    video = counting_video(40)
    video = torch.as_tensor(video) if as_tensor else video
    clip = ClipSample(length=32, period=2, start=0, pad_value=[200, 201, 202])(video)
    for c, v in enumerate([200, 201, 202]):
        assert (clip[c, 20:] == v).all() and (clip[c, :20] != v).all()
    clips = AllClips(length=32, period=2, pad_value=250)(video)
    assert (clips[:, :, 20:] == 250).all()
    with pytest.raises(ValueError, match="one per channel"):
        ClipSample(length=32, period=2, pad_value=[1, 2])(video)


# ---------------------------------------------------------------------------------------------- full pipeline


def test_training_and_test_pipelines_on_demo(demo, tmp_path):
    items = load_echonet_filelist(demo, "TRAIN")
    norm = save_normalization(str(tmp_path / "norm.json"), *fit_video_normalization(items))
    views = ("image", "image_2")
    train = Compose(
        [
            LoadVideod("image", cache_dir=str(tmp_path / "cache")),
            CopyItemsd("image", names="image_2"),
            *[RandClipSampled(k, length=32, period=2) for k in views],
            NormalizeVideod(views, norm),
            BorderPadd(views, spatial_border=(0, 12, 12)),
            *[RandSpatialCropd(k, roi_size=(-1, 112, 112), random_size=False) for k in views],
        ]
    )
    loader = torch.utils.data.DataLoader(Dataset(items, train), batch_size=2, collate_fn=list_data_collate)
    batch = next(iter(loader))
    assert batch["image"].shape == batch["image_2"].shape == (2, 3, 32, 112, 112)
    assert batch["image"].dtype == torch.float32 and batch["label"].shape == (2,)
    assert abs(float(batch["image"].mean())) < 0.5

    test = Compose([LoadVideod("image"), AllClipsd("image", stride=8), NormalizeVideod("image", norm)])
    out = test(load_echonet_filelist(demo, "TEST")[0])
    assert out["image"].ndim == 5 and out["image"].shape[1:] == (3, 32, 112, 112)
    assert out["image"].shape[0] == len(range(0, out["image"].meta["num_frames"] - 62, 8))


def loop_views(img: np.ndarray, starts, shifts, length: int, period: int, fill) -> np.ndarray:
    """Plain-loop reference for RandClipViews: out[v, c, i, y, x] = img[c, start + period * i, y + dy, x + dx] when
    that frame and pixel exist, else fill[c] (EchoNet: end padding of short videos, then pad + crop jitter)."""
    c_, t_, h_, w_ = img.shape
    fill = np.broadcast_to(np.asarray(fill), (c_,))
    out = np.empty((len(starts), c_, length, h_, w_), img.dtype)
    for v, (start, (dy, dx)) in enumerate(zip(starts, shifts)):
        for c in range(c_):
            for i in range(length):
                t = start + period * i
                for y in range(h_):
                    for x in range(w_):
                        inside = t < t_ and 0 <= y + dy < h_ and 0 <= x + dx < w_
                        out[v, c, i, y, x] = img[c, t, y + dy, x + dx] if inside else fill[c]
    return out


@pytest.mark.parametrize("num_frames", [5, 13, 40])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_rand_clip_views_matches_loop(num_frames, as_tensor):
    img = np.random.default_rng(num_frames).integers(1, 255, (3, num_frames, 9, 11), dtype=np.uint8)
    views = RandClipViews(num_views=4, length=6, period=3, pad=4, pad_value=[0, 7, 250]).set_random_state(3)
    out = views(torch.as_tensor(img) if as_tensor else img)
    assert type(out) is (torch.Tensor if as_tensor else np.ndarray) and out.shape == (4, 3, 6, 9, 11)
    assert out.dtype == (torch.uint8 if as_tensor else np.uint8)
    ref = loop_views(img, views.starts, views.shifts, 6, 3, [0, 7, 250])
    np.testing.assert_array_equal(np.asarray(out), ref)
    assert len(set(views.starts)) > 1 or num_frames <= 18  # independent draws per view


def test_rand_clip_views_equals_composed_transforms():
    """Same draws, same order, same output as RandMultiView(Compose([RandClipSample, RandFrameJitter]))."""
    from monai_contrastive.transforms import RandMultiView

    rng = np.random.default_rng(0)
    for num_frames in (10, 40, 81):
        img = rng.integers(0, 255, (3, num_frames, 20, 24), dtype=np.uint8)
        for seed in range(4):
            fused = RandClipViews(3, length=8, period=3, pad=5, pad_value=[7, 8, 9], prob=0.7).set_random_state(seed)
            clip, jitter = RandClipSample(8, 3, pad_value=[7, 8, 9]), RandFrameJitter(5, [7, 8, 9], prob=0.7)
            composed = Compose([clip, jitter])  # Compose reseeds its members: share one state afterwards
            state = np.random.RandomState(seed)
            clip.set_random_state(state=state)
            jitter.set_random_state(state=state)
            ref = RandMultiView(composed, num_views=3)(img).numpy()
            np.testing.assert_array_equal(fused(img), ref)


def test_rand_clip_viewsd_keys_errors_and_reuse(tmp_path):
    video = counting_video(40, size=6)
    views = RandClipViewsd("image", num_views=2, length=4, period=2, pad=0, view_keys=["image", "image_2"])
    out = views.set_random_state(0)({"image": video, "label": 1.0})
    assert out["image"].shape == out["image_2"].shape == (3, 4, 6, 6) and out["label"] == 1.0
    for key, start in zip(("image", "image_2"), views.views.starts):
        np.testing.assert_array_equal(frame_ids(out[key]), start + 1 + 2 * np.arange(4))
    stacked = RandClipViewsd("image", num_views=3, length=4, period=2).set_random_state(0)({"image": video})
    assert stacked["image"].shape == (3, 3, 4, 6, 6)
    with pytest.raises(ValueError, match="distinct view_keys"):
        RandClipViewsd("image", num_views=2, view_keys=["image"])
    with pytest.raises(ValueError, match="exactly one input key"):
        RandClipViewsd(["image", "mask"], num_views=2, view_keys=["a", "b"])
    path = write_counting_avi(str(tmp_path / "short.avi"), 20)
    loaded = LoadVideod("image")({"image": path})
    with pytest.raises(ValueError, match="RandClipViewsd: key 'image'.*short.avi.*20 frames"):
        RandClipViewsd("image", length=32, period=2, pad_short=False)(loaded)
    single = RandClipViews(num_views=2, length=4, period=2, pad=1).set_random_state(1)
    first = single(video)
    np.testing.assert_array_equal(single(video, randomize=False), first)
    meta = single(LoadVideo()(write_counting_avi(str(tmp_path / "long.avi"), 40)))
    assert isinstance(meta, MetaTensor) and meta.shape == (2, 3, 4, 16, 16)
    assert meta.meta["clip_starts"] == single.starts and meta.meta["filename_or_obj"].endswith("long.avi")


def test_bundle_pipeline_uint8_then_normalised_on_device(demo, tmp_path):
    """The LVEF bundle's fast path: uint8 views from the cache, normalised by the network's InputNormalization."""
    from monai_contrastive.networks import InputNormalization

    items = load_echonet_filelist(demo, "TRAIN")
    mean, std = fit_video_normalization(items)
    fill = [int(round(m)) for m in mean]
    views = RandClipViewsd("image", 2, 32, 2, pad=12, pad_value=fill, view_keys=["image", "image_2"])
    train = Compose([LoadVideod("image", cache_dir=str(tmp_path / "cache"), as_tensor=False), views])
    loader = ThreadDataLoader(Dataset(items, train), batch_size=2, num_workers=0, collate_fn=list_data_collate)
    batch = next(iter(loader))
    assert batch["image"].shape == batch["image_2"].shape == (2, 3, 32, 112, 112)
    assert batch["image"].dtype == torch.uint8
    assert not torch.equal(batch["image"], batch["image_2"])  # two independent views
    x = InputNormalization(mean, std)(batch["image"])
    ref = NormalizeVideo(mean, std)(batch["image"])  # (B, C, T, H, W) read as a stack of clips
    torch.testing.assert_close(x, ref)
    assert abs(float(x.mean())) < 0.5
