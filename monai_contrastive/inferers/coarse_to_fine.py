"""Whole-volume inference of DCC-CL (Lee et al., §3.1, §3.3): a low-resolution coarse 3D segmentation, then binary
organ-patch refinement by a 2D network on axial slices, fused per slice by majority voting."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer

from monai_contrastive.networks.dcc import coarse_logits

__all__ = ["CoarseInferer", "CoarseToFineInferer", "majority_vote", "tile_centres"]


class CoarseInferer(Inferer):
    """The coarse stage alone: ``inferer(volume (B, 1, H, W, D), coarse_network)`` -> class logits ``(B, C, H, W,
    D)`` on the volume's grid (the network runs at ``spatial_size``). Evaluates the coarse network's own Dice."""

    def __init__(self, spatial_size: Sequence[int]) -> None:
        super().__init__()
        self.spatial_size = [int(s) for s in spatial_size]

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        return coarse_logits(network, inputs, self.spatial_size)


def tile_centres(lo: int, hi: int, size: int) -> list[int]:
    """Centres of patches of ``size`` that cover ``[lo, hi)`` with half-patch overlap (one centred patch when the
    range fits in one)."""
    if hi - lo <= size:
        return [(lo + hi) // 2]
    half = size // 2
    centres = list(range(lo + half, hi - half, max(1, half)))
    if not centres or centres[-1] != hi - half:
        centres.append(hi - half)
    return centres


def majority_vote(votes: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
    """Fuse binary organ-patch outputs of one slice (§3.3 "majority voting").

    ``votes[c]`` counts the patches of organ ``c`` that call a pixel organ ``c``, ``cover[c]`` the patches of organ
    ``c`` that contain it, both ``(C, H, W)`` with class 0 (background) unused. A pixel is organ ``c`` when the
    majority of organ ``c``'s patches over it say so (``votes / cover > 0.5``); when several organs win one pixel
    the one with the largest majority does (ties: the lower label). Returns the label map ``(H, W)`` (int64).
    """
    frac = torch.where(cover > 0, votes / cover.clamp(min=1), torch.zeros_like(votes))
    frac[0] = 0.0
    best, label = frac.max(0)
    return torch.where(best > 0.5, label, torch.zeros_like(label))


class CoarseToFineInferer(Inferer):
    """The DCC-CL pipeline on a whole volume: coarse mask -> organ patches -> binary fine outputs -> per-slice
    majority voting -> the stacked 3D label map.

    ``inferer(volume (1, 1, H, W, D), fine_network)`` (RAS, last axis axial, intensities normalised as in training)
    returns the one-hot label map ``(1, C, H, W, D)`` (float), so MONAI postprocessing (``Invertd``, ``AsDiscreted
    (argmax=True)``) maps it back to the input's space.

    1. ``A = argmax coarse_logits(coarse_network, volume)`` (§3.1).
    2. For every axial slice and every organ ``c`` of ``A`` in it: ``patch_size`` patches tiling the organ's bounding
       box in ``A`` (half-patch overlap, one centred patch for a small organ); input ``[image, A == c]`` as in
       training.
    3. The fine network's logit > 0 (sigmoid > 0.5) is that patch's binary output for ``c``.
    4. :func:`majority_vote` over the slice's patches; the slices are stacked (§3.3).

    Args:
        coarse_network: the trained coarse 3D network (eval mode).
        num_classes: label values including background.
        coarse_size: the coarse network's input size.
        patch_size: the fine network's patch size (128 in the paper).
        sw_batch_size: patches per forward of the fine network.
        fine_output_key: the entry of a dict output of the fine network.
    """

    def __init__(
        self,
        coarse_network: torch.nn.Module,
        num_classes: int,
        coarse_size: Sequence[int],
        patch_size: int = 128,
        sw_batch_size: int = 32,
        fine_output_key: str = "pred",
    ) -> None:
        super().__init__()
        self.coarse_network = coarse_network
        self.num_classes = int(num_classes)
        self.coarse_size = [int(s) for s in coarse_size]
        self.patch_size = int(patch_size)
        self.sw_batch_size = int(sw_batch_size)
        self.fine_output_key = fine_output_key

    def coarse_mask(self, inputs: torch.Tensor) -> torch.Tensor:
        """``A`` ``(H, W, D)`` (int64) of one volume ``(1, 1, H, W, D)``."""
        self.coarse_network.to(inputs.device).eval()
        logits = coarse_logits(self.coarse_network, inputs, self.coarse_size)
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"CoarseToFineInferer: the coarse network outputs {logits.shape[1]} classes, expected "
                f"{self.num_classes}."
            )
        return logits.argmax(1)[0]

    def _fine(self, network, x: torch.Tensor) -> torch.Tensor:
        out = network(x)
        if isinstance(out, dict):
            out = out[self.fine_output_key]
        return out[:, 0] > 0

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        if inputs.ndim != 5 or inputs.shape[0] != 1:
            raise ValueError(f"CoarseToFineInferer: one volume (1, 1, H, W, D) expected, got {tuple(inputs.shape)}.")
        image = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        with torch.no_grad():
            mask = self.coarse_mask(image)
        h, w, depth = mask.shape
        p, half = self.patch_size, self.patch_size // 2
        padded_img = F.pad(image[0, 0].float().permute(2, 0, 1), (half, half, half, half))  # (D, H + p, W + p)
        padded_mask = F.pad(mask.permute(2, 0, 1), (half, half, half, half))
        labels = torch.zeros((h, w, depth), dtype=torch.long, device=image.device)
        for z in range(depth):
            organs = [int(c) for c in torch.unique(mask[..., z]).tolist() if 0 < int(c) < self.num_classes]
            if not organs:
                continue
            jobs = []
            for c in organs:
                rows, cols = torch.nonzero(mask[..., z] == c, as_tuple=True)
                for r in tile_centres(int(rows.min()), int(rows.max()) + 1, p):
                    for q in tile_centres(int(cols.min()), int(cols.max()) + 1, p):
                        jobs.append((c, r, q))  # centre (r, q) -> padded window [r, r + p)
            votes = torch.zeros((self.num_classes, h + 2 * half, w + 2 * half), device=image.device)
            cover = torch.zeros_like(votes)
            for start in range(0, len(jobs), self.sw_batch_size):
                chunk = jobs[start : start + self.sw_batch_size]
                x = torch.stack(
                    [
                        torch.stack(
                            [padded_img[z, r : r + p, q : q + p], (padded_mask[z, r : r + p, q : q + p] == c).float()]
                        )
                        for c, r, q in chunk
                    ]
                )
                with torch.no_grad():
                    binary = self._fine(network, x).float()
                for (c, r, q), b in zip(chunk, binary):
                    votes[c, r : r + p, q : q + p] += b
                    cover[c, r : r + p, q : q + p] += 1.0
            labels[..., z] = majority_vote(
                votes[:, half : half + h, half : half + w], cover[:, half : half + h, half : half + w]
            )
        onehot = F.one_hot(labels, self.num_classes).permute(3, 0, 1, 2)[None].float()
        if isinstance(inputs, MetaTensor):  # keep the metadata (affine, applied operations) that Invertd inverts
            onehot = MetaTensor(onehot).copy_meta_from(inputs)
        return onehot
