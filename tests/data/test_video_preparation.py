"""The echo bundle's data preparation (train.json's ``prepare_data``): videos checked, frames cached, normalisation
fitted once, a bad video named before training."""

from __future__ import annotations

import json
import os

import pytest

from monai_contrastive.data import (
    VideoCache,
    fit_video_normalization,
    load_echonet_filelist,
    prepare_video_training,
)


def test_prepare_checks_caches_and_fits_once(demo, tmp_path):
    train, val = load_echonet_filelist(demo, "TRAIN"), load_echonet_filelist(demo, "VAL")
    norm = str(tmp_path / "models" / "normalization.json")
    cache = str(tmp_path / "cache")
    mean, std = prepare_video_training(
        train + val, norm, train, cache_dir=cache, normalization_videos=2, normalization_seed=3
    )
    saved = json.load(open(norm))
    assert (saved["num_videos"], saved["seed"], saved["fitted_on"]) == (2, 3, len(train))
    # the statistics are those of the named draw from the training videos only
    assert (mean, std) == fit_video_normalization(train, num_videos=2, seed=3)
    # every training and validation video is decoded into the cache
    assert all(os.path.isfile(VideoCache(cache).cache_path(x["image"])) for x in train + val)
    # a second call reads the saved statistics back, whatever the items
    assert prepare_video_training(train[:1], norm, train[:1], cache_dir=cache) == (mean, std)


def test_prepare_names_a_missing_video_before_fitting(demo, tmp_path):
    train = load_echonet_filelist(demo, "TRAIN")
    bad = dict(train[0], image=str(tmp_path / "gone.avi"))
    norm = str(tmp_path / "normalization.json")
    with pytest.raises((FileNotFoundError, ValueError), match="gone.avi"):
        prepare_video_training(train + [bad], norm, train)
    assert not os.path.exists(norm)
