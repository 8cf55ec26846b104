"""What a video-regression training run prepares before its first epoch: every video checked, decoded frames cached,
the input normalisation fitted and saved (all on rank 0 of a distributed run, see
:func:`monai_contrastive.distributed.rank_zero_first`)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["prepare_video_training"]


def prepare_video_training(
    items: Sequence[dict],
    normalization_file: str,
    normalization_items: Sequence[dict],
    cache_dir: str | None = None,
    num_workers: int = 0,
    normalization_videos: int | None = 128,
    normalization_seed: int = 0,
) -> tuple[list[float], list[float]]:
    """Check every video of ``items`` (header, frame count), fill the decoded-frame cache when ``cache_dir`` is set,
    then fit the normalisation statistics on ``normalization_items`` and save them to ``normalization_file`` (or
    load them when the file exists), so that a failure names its video before training starts.

    Args:
        items: every item the run reads (training and validation).
        normalization_file: the JSON file of the statistics (:func:`monai_contrastive.data.video_normalization`).
        normalization_items: the items the statistics are fitted on (the training items).
        cache_dir: folder of the :class:`monai_contrastive.data.VideoCache`; empty or None: no cache.
        num_workers: processes decoding videos into the cache.
        normalization_videos: videos drawn for the fit (None: all).
        normalization_seed: seed of that draw.

    Returns:
        ``(mean, std)``, one float per channel, 0-255 scale.

    Raises:
        FileNotFoundError, ValueError: a video is missing, unreadable or shorter than needed (named).
    """
    from monai_contrastive.data import VideoCache, check_video_files, video_normalization

    check_video_files(list(items))
    if cache_dir:
        VideoCache(cache_dir).prepare(list(items), num_workers=num_workers)
    return video_normalization(
        normalization_file,
        list(normalization_items),
        num_videos=normalization_videos,
        seed=normalization_seed,
        cache_dir=cache_dir or None,
    )
