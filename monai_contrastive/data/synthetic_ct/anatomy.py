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
"""The anatomy of the synthetic CT phantom: one case's body, skeleton, thorax, bowel, vessels and 13 organs drawn as
smooth analytic shapes in life-size millimetres and painted as tissue ids on the case's (miniature) grid."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from monai_contrastive.data.synthetic_ct.tissues import PAINTABLE, TISSUE_ID

__all__ = ["REFERENCE_FOV_MM", "Phantom"]

REFERENCE_FOV_MM = 350.0
"""The anatomy is scaled by ``matrix * in-plane spacing / REFERENCE_FOV_MM`` (life-size at that field of view)."""


def _rotation(ax: float = 0.0, ay: float = 0.0, az: float = 0.0) -> np.ndarray:
    """Rotation matrix ``Rz @ Ry @ Rx`` (radians); its columns are the local axes in patient coordinates."""
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _frame(axis_z: np.ndarray, toward_x: np.ndarray) -> np.ndarray:
    """Rotation whose third column is ``axis_z`` and whose first column is ``toward_x`` made orthogonal to it."""
    z = axis_z / np.linalg.norm(axis_z)
    x = toward_x - np.dot(toward_x, z) * z
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def _catmull_rom(points: np.ndarray, radii: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample a Catmull-Rom spline through ``points`` (N, 3) about every ``step`` mm; radii interpolated linearly."""
    padded = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    samples, rads = [], []
    for i in range(len(points) - 1):
        p0, p1, p2, p3 = padded[i : i + 4]
        n = max(2, int(math.ceil(np.linalg.norm(p2 - p1) / step)))
        t = (np.arange(n) / n)[:, None]
        seg = 0.5 * (
            2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
        )
        samples.append(seg)
        rads.append(radii[i] + (radii[i + 1] - radii[i]) * t[:, 0])
    samples.append(points[-1:])
    rads.append(radii[-1:])
    return np.concatenate(samples), np.concatenate(rads)


class Phantom:
    """One case's anatomy, drawn in life-size millimetres and rendered on its (miniature) canonical RAS grid.

    Patient frame: x to the patient's right, y anterior, z superior; origin at the body centre at the level of
    the renal hila. ``size_factor`` (``k`` in the drawing methods) scales the skeleton and organs; lengths are
    written for ``k = 1``.
    """

    def __init__(self, rng: np.random.Generator, matrix: int, pixel_spacing: float, slice_spacing: float) -> None:
        self.rng = rng
        self.pixel_spacing, self.slice_spacing = pixel_spacing, slice_spacing
        self.scale = matrix * pixel_spacing / REFERENCE_FOV_MM
        # smallest life-size lengths that stay about one voxel / one slice after scaling
        self.min_in_plane = pixel_spacing / self.scale
        self.min_cranio_caudal = slice_spacing / self.scale
        k = self.size_factor = self.uniform(0.9, 1.05)
        self.cavity_half_width, self.cavity_half_depth = 112.0 * k * self.uniform(0.95, 1.05), 84.0 * k * self.uniform(
            0.95, 1.05
        )
        self.wall = max(self.uniform(8.0, 14.0), 1.5 * self.min_in_plane)
        self.fat = self.uniform(8.0, 35.0)
        self.dome_r = 135.0 * k + self.jitter(6.0)
        self.dome_l = self.dome_r - self.uniform(5.0, 20.0)
        self.vertebral_body_y = -self.cavity_half_depth + self.uniform(58.0, 66.0) * k
        self.kidney_r = np.array(
            [66.0 * k + self.jitter(4.0), -22.0 * k + self.jitter(3.0), -15.0 * k + self.jitter(6.0)]
        )
        self.kidney_l = np.array(
            [-66.0 * k + self.jitter(4.0), -22.0 * k + self.jitter(3.0), 0.0 * k + self.jitter(6.0)]
        )
        self.kidney_len = 52.0 * k * self.uniform(0.9, 1.1)
        self.aortic_bifurcation_z = -85.0 * k + self.jitter(8.0)
        self._setup_grid(matrix)

    # random draws as python floats (which keep the float32 grids in float32)
    def uniform(self, low: float, high: float) -> float:
        """A uniform draw in ``[low, high)``."""
        return float(self.rng.uniform(low, high))

    def jitter(self, sd: float) -> float:
        """A normal draw of SD ``sd`` clipped to two SDs: the random offset of a position or size."""
        return float(np.clip(self.rng.normal(0.0, sd), -2.0 * sd, 2.0 * sd))

    def _setup_grid(self, matrix: int) -> None:
        rng, s = self.rng, self.scale
        # cranio-caudal coverage: kidneys' lower poles to the right dome, plus random margins
        z_low = min(self.kidney_r[2], self.kidney_l[2]) - self.kidney_len - 10.0 * self.size_factor
        z_high = self.dome_r + 25.0 * self.size_factor
        span = (z_high - z_low) * s
        nz = max(int(math.ceil(span / self.slice_spacing)), max(8, int(round(0.16 * matrix))))
        extra = nz * self.slice_spacing / s - (z_high - z_low)
        below = extra * self.uniform(0.25, 0.75)
        self.z_first = z_low - below  # life-size z of the first (most inferior) slice
        self.z_last = self.z_first + (nz - 1) * self.slice_spacing / s
        self.shape = (matrix, matrix, nz)
        # world (RAS, mm): scanner-like origin; body centre near the FOV centre, slices at a table position
        fov = matrix * self.pixel_spacing
        origin_xy = -0.5 * (matrix - 1) * self.pixel_spacing + float(rng.integers(-320, 321)) / 64.0
        origin_z = float(rng.integers(-1600, -200)) / 4.0
        self.affine = np.diag([self.pixel_spacing, self.pixel_spacing, self.slice_spacing, 1.0])
        self.affine[:3, 3] = (origin_xy, origin_xy + float(rng.integers(-160, 161)) / 64.0, origin_z)
        centre = self.affine[:2, 3] + 0.5 * (matrix - 1) * self.pixel_spacing
        self.body_centre = centre + fov * np.array([self.uniform(-0.012, 0.012), self.uniform(-0.012, 0.012)])
        self.body_z0 = origin_z - s * self.z_first  # world z of life-size z = 0
        self.angle = math.radians(self.uniform(-4.0, 4.0))
        # life-size patient coordinates of every voxel: rotation in-plane, then a smooth displacement field
        u = ((self.affine[0, 3] + self.pixel_spacing * np.arange(matrix) - self.body_centre[0]) / s).astype(np.float32)
        v = ((self.affine[1, 3] + self.pixel_spacing * np.arange(matrix) - self.body_centre[1]) / s).astype(np.float32)
        w = ((origin_z + self.slice_spacing * np.arange(nz) - self.body_z0) / s).astype(np.float32)
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        x0 = ca * u[:, None, None] + sa * v[None, :, None]
        y0 = -sa * u[:, None, None] + ca * v[None, :, None]
        z0 = w[None, None, :]
        coords = []
        self.max_displacement = 0.0  # bound of the displacement of any one coordinate
        for _ in range(3):
            d = np.zeros(self.shape, dtype=np.float32)
            bound = 0.0
            for _ in range(2):
                amp = self.uniform(1.0, 4.0)
                kvec = rng.normal(0.0, 1.0, 3)
                kvec *= 2.0 * math.pi / (np.linalg.norm(kvec) * self.uniform(150.0, 400.0))
                d += amp * np.sin(
                    float(kvec[0]) * x0 + float(kvec[1]) * y0 + float(kvec[2]) * z0 + self.uniform(0.0, 2.0 * math.pi)
                )
                bound += amp
            self.max_displacement = max(self.max_displacement, bound)
            coords.append(d)
        self.X = coords[0] + x0
        self.Y = coords[1] + y0
        self.Z = coords[2] + z0
        self.tissue = np.zeros(self.shape, dtype=np.uint8)
        # texture fields (unit SD): organ-scale (~8 mm life-size) and fine (~2.5 mm), at least ~1 voxel
        self.field_lo = self._field(8.0, 1.2)
        self.field_mid = self._field(2.5, 0.6)

    def _field(self, sigma_mm: float, min_voxels: float) -> np.ndarray:
        s = self.scale
        sig_xy = max(sigma_mm * s / self.pixel_spacing, min_voxels)
        sig_z = max(sigma_mm * s / self.slice_spacing, 0.3)
        field = self.rng.standard_normal(self.shape, dtype=np.float32)
        field = gaussian_filter(field, sigma=(sig_xy, sig_xy, sig_z), mode="wrap", truncate=3.0)
        field /= float(field.std()) + 1e-12
        return field

    # geometry helpers ------------------------------------------------------------------------------------------------

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose life-size coordinates may fall in the box ``[lo, hi]``."""
        d = self.max_displacement + 1.0
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        corners = np.array([(x, y) for x in (lo[0] - d, hi[0] + d) for y in (lo[1] - d, hi[1] + d)])
        u = ca * corners[:, 0] - sa * corners[:, 1]
        v = sa * corners[:, 0] + ca * corners[:, 1]
        s = self.scale
        i = (self.body_centre[0] + s * u - self.affine[0, 3]) / self.pixel_spacing
        jj = (self.body_centre[1] + s * v - self.affine[1, 3]) / self.pixel_spacing
        kz = (self.body_z0 + s * np.array([lo[2] - d, hi[2] + d]) - self.affine[2, 3]) / self.slice_spacing
        out = []
        for idx, n in zip((i, jj, kz), self.shape):
            a, b = max(int(math.floor(idx.min())), 0), min(int(math.ceil(idx.max())) + 1, n)
            if a >= b:
                return None
            out.append(slice(a, b))
        return tuple(out)  # type: ignore[return-value]

    def xyz(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.X[sl], self.Y[sl], self.Z[sl]

    def allowed(self, sl: tuple[slice, slice, slice], region: str = "abdomen") -> np.ndarray:
        """Voxels a structure may take: not protected and, for ``abdomen`` / ``thorax``, on that side of the dome."""
        ok = PAINTABLE[self.tissue[sl]]
        if region == "abdomen":
            ok &= self.Z[sl] <= self.diaphragm[sl]
        elif region == "thorax":
            ok &= self.Z[sl] > self.diaphragm[sl]
        return ok

    def put(self, sl: tuple[slice, slice, slice], mask: np.ndarray, name: str) -> None:
        view = self.tissue[sl]
        view[mask] = TISSUE_ID[name]

    def wobble(self, n: int, amplitude: float) -> list[tuple[float, float, float, float, float]]:
        """Low-frequency surface perturbation terms ``(amp, wx, wy, wz, phase)`` in normalised coordinates."""
        terms = []
        for _ in range(n):
            direction = self.rng.normal(0.0, 1.0, 3)
            direction *= self.uniform(1.0, 2.5) / np.linalg.norm(direction)
            terms.append((self.uniform(0.3, 1.0) * amplitude, *map(float, direction), self.uniform(0.0, 2.0 * math.pi)))
        return terms

    def ellipsoid(
        self,
        centre: Sequence[float],
        axes: Sequence[float],
        rotation: np.ndarray | None = None,
        wobble: list | None = None,
        clamp: bool = True,
        min_size: tuple[float, float, float] = (1.2, 1.2, 1.0),
    ) -> tuple[tuple[slice, slice, slice] | None, np.ndarray | None, list[np.ndarray] | None]:
        """Normalised radius (< 1 inside) of a rotated, wobbled ellipsoid on its bounding box, and local coordinates.

        With ``clamp``, the first two axes (in-plane for small tilts) are at least ``min_size[:2]`` voxels and
        the third (cranio-caudal) at least ``min_size[2]`` slices.
        """
        a = np.array(axes, dtype=float)
        if clamp:
            a[:2] = np.maximum(a[:2], np.array(min_size[:2]) * self.min_in_plane)
            a[2] = max(a[2], min_size[2] * self.min_cranio_caudal)
        rot = np.eye(3) if rotation is None else rotation
        extent = np.abs(rot) @ a * 1.3
        c = np.asarray(centre, dtype=float)
        sl = self.box(c - extent, c + extent)
        if sl is None:
            return None, None, None
        X, Y, Z = self.xyz(sl)
        dx, dy, dz = X - float(c[0]), Y - float(c[1]), Z - float(c[2])
        q = [(float(rot[0, i]) * dx + float(rot[1, i]) * dy + float(rot[2, i]) * dz) / float(a[i]) for i in range(3)]
        r = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])
        if wobble:
            pert = 1.0
            for amp, wx, wy, wz, ph in wobble:
                pert = pert + amp * np.sin(wx * q[0] + wy * q[1] + wz * q[2] + ph)
            r = r / pert
        return sl, r, q

    def tube(
        self, points: Sequence[Sequence[float]], radii: Sequence[float], min_radius: float = 1.0
    ) -> Iterator[tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(slices, depth, centre, radius)`` per piece of a tube swept along a Catmull-Rom centre line.

        ``depth`` is the radius minus the distance to the nearest centre-line sample (positive inside, life-size
        mm); ``centre`` (3, ...) and ``radius`` are that sample's. Each voxel is reported by exactly one piece.
        """
        pts = np.asarray(points, dtype=float)
        rad = np.maximum(np.asarray(radii, dtype=float), min_radius * self.min_in_plane)
        samples, srad = _catmull_rom(pts, rad, step=0.4 * float(rad.min()))
        piece, halo = 8, 3
        for start in range(0, len(samples), piece):
            stop = min(start + piece, len(samples))
            own = samples[start:stop]
            reach = float(srad[start:stop].max())
            sl = self.box(own.min(0) - reach, own.max(0) + reach)
            if sl is None:
                continue
            a, b = max(start - halo, 0), min(stop + halo, len(samples))
            X, Y, Z = self.xyz(sl)
            best = np.full(X.shape, np.inf, dtype=np.float32)
            arg = np.zeros(X.shape, dtype=np.int32)
            for n in range(a, b):
                px, py, pz = (float(v) for v in samples[n])
                dist = np.sqrt((X - px) ** 2 + (Y - py) ** 2 + (Z - pz) ** 2) - float(srad[n])
                closer = dist < best
                best = np.where(closer, dist, best)
                arg[closer] = n
            mine = (arg >= start) & (arg < stop)
            depth = np.where(mine, -best, -np.inf).astype(np.float32)
            yield sl, depth, samples[arg].transpose(-1, *range(arg.ndim)), srad[arg]

    # anatomy ---------------------------------------------------------------------------------------------------------

    def render(self) -> np.ndarray:
        """Paint every structure (later ones win where allowed) and return the canonical tissue-id volume."""
        self._body()
        self._thorax()
        self._ribs()
        self._spine_and_muscles()
        self._pelvis()
        self._bowel()
        self._vessels()
        self._organs()
        return self.tissue

    def _radial(self, a: np.ndarray | float, b: np.ndarray | float, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Normalised radius of an ellipse-like outline, flattened posteriorly (superellipse, exponent 2.6)."""
        xa, yb = np.abs(X / a), np.abs(Y / b)
        anterior = np.sqrt(xa * xa + yb * yb)
        posterior = (xa**2.6 + yb**2.6) ** (1.0 / 2.6)
        return np.where(Y >= 0, anterior, posterior)

    def _body(self) -> None:
        X, Y, Z = self.X, self.Y, self.Z
        theta = np.arctan2(Y, X)
        harmonics = 1.0
        for order in (2, 3, 4):
            harmonics = harmonics + self.uniform(-0.02, 0.02) * np.cos(order * theta + self.uniform(0.0, 2 * math.pi))
        zf = 1.0 + self.uniform(0.02, 0.06) * np.sin(
            2 * math.pi * Z / self.uniform(250.0, 450.0) + self.uniform(0.0, 2 * math.pi)
        )
        ca, cb = self.cavity_half_width * zf * harmonics, self.cavity_half_depth * zf * harmonics
        fat = self.fat * (1.0 + self.uniform(0.1, 0.4) * np.cos(theta - self.uniform(0.0, 2 * math.pi)))
        self.rho_cavity = self._radial(ca, cb, X, Y)
        self.rho_wall = self._radial(ca + self.wall, cb + self.wall, X, Y)
        rho_skin = self._radial(ca + self.wall + fat, cb + self.wall + 0.8 * fat, X, Y)
        t = self.tissue
        t[rho_skin < 1.0] = TISSUE_ID["fat_subcutaneous"]
        t[self.rho_wall < 1.0] = TISSUE_ID["muscle"]
        t[self.rho_cavity < 1.0] = TISSUE_ID["fat_visceral"]
        # diaphragm: two paraboloid domes, the right higher
        curvature = 2.0 * 120.0 * self.size_factor
        dome_r = self.dome_r - ((X - 55.0 * self.size_factor) ** 2 + (Y + 5.0) ** 2) / curvature
        dome_l = self.dome_l - ((X + 55.0 * self.size_factor) ** 2 + (Y + 5.0) ** 2) / curvature
        self.diaphragm = np.maximum(dome_r, dome_l)

    def _thorax(self) -> None:
        k = self.size_factor
        cavity = self.rho_cavity < 1.0
        thickness = max(4.0 * k, 0.5 * self.min_cranio_caudal)
        above = self.Z - self.diaphragm
        self.tissue[cavity & (above > 0) & (above <= thickness)] = TISSUE_ID["diaphragm"]
        self.tissue[cavity & (above > thickness)] = TISSUE_ID["lung"]
        # mediastinal fat column and the heart resting on the domes
        top = self.z_last + 20.0
        sl, r, _ = self.ellipsoid(
            (-8.0 * k, self.vertebral_body_y + 26.0 * k, top), (30.0 * k, 24.0 * k, 1e4), clamp=False
        )
        if sl is not None:
            self.put(sl, (r < 1.0) & self.allowed(sl, "thorax"), "fat_visceral")
        centre = (-12.0 * k + self.jitter(5.0), 35.0 * k + self.jitter(5.0), min(self.dome_r, self.dome_l) + 50.0 * k)
        sl, r, _ = self.ellipsoid(centre, (62.0 * k, 50.0 * k, 60.0 * k), _rotation(az=self.jitter(0.15)))
        if sl is not None:
            self.put(sl, (r < 1.0) & self.allowed(sl, "thorax"), "heart")

    def _ribs(self) -> None:
        """Ribs in the lower chest wall: descending anteriorly, the lowest two short (floating)."""
        k = self.size_factor
        # rib 12 leaves the spine at about T12, each rib above one vertebra higher; all descend anteriorly
        z_lowest = 55.0 * k + self.jitter(5.0)
        spacing = self.uniform(32.0, 38.0) * k
        drop = self.uniform(120.0, 160.0) * k
        num = 10
        z_low = z_lowest - drop
        if z_low > self.z_last:
            return
        kz0 = max(
            int((self.body_z0 + self.scale * (z_low - self.max_displacement) - self.affine[2, 3]) / self.slice_spacing),
            0,
        )
        sl = (slice(None), slice(None), slice(kz0, None))
        ring = (self.rho_wall[sl] < 1.0) & (self.rho_cavity[sl] >= 0.92)
        X, Y, Z = self.X[sl][ring], self.Y[sl][ring], self.Z[sl][ring]
        rho = self.rho_cavity[sl][ring]
        radial = np.hypot(X, Y) * (1.0 - 1.0 / rho)  # distance outside the cavity outline along the ray
        phi = np.abs(np.arctan2(X, -Y))  # 0 at the back, pi at the front
        half_r = max(0.45 * self.wall, 0.6 * self.min_in_plane)
        half_z = max(6.0 * k, 0.5 * self.min_cranio_caudal)
        bone = np.zeros(X.shape, dtype=np.float32)
        for i in range(num):
            z0 = z_lowest + i * spacing + self.jitter(2.0)
            end = (0.45 if i == 0 else 0.6 if i == 1 else 0.82) * math.pi + self.jitter(0.08)
            zc = z0 - drop * (phi / math.pi) ** 1.3
            d = np.sqrt(((radial - 0.5 * self.wall) / half_r) ** 2 + ((Z - zc) / half_z) ** 2)
            inside = (phi > 0.3) & (phi < end)
            bone = np.maximum(bone, np.where(inside, 2.0 - d, 0.0))
        ids = np.where(bone > 1.45, TISSUE_ID["trabecular_bone"], np.where(bone > 1.0, TISSUE_ID["cortical_bone"], 255))
        view = self.tissue[sl]
        current = view[ring]
        view[ring] = np.where(ids == 255, current, ids).astype(np.uint8)

    def _spine_and_muscles(self) -> None:
        k = self.size_factor
        top, bottom = self.z_last + 20.0, self.z_first - 20.0
        # paraspinal muscles
        for side in (-1.0, 1.0):
            centre = (side * 30.0 * k, -self.cavity_half_depth + 26.0 * k, 0.5 * (top + bottom))
            sl, r, _ = self.ellipsoid(centre, (24.0 * k, 22.0 * k, 1e4), clamp=False)
            if sl is not None:
                self.put(sl, (r < 1.0) & (self.rho_cavity[sl] < 1.0), "muscle")
        # psoas: grows caudally from about the renal hila
        a_vb, b_vb = 21.0 * k, 16.0 * k
        z_psoas = 10.0 * k + self.jitter(5.0)
        r_psoas = 20.0 * k * self.uniform(0.85, 1.15)
        sl = self.box(
            (-a_vb - 2 * r_psoas, self.vertebral_body_y - 2 * r_psoas, bottom),
            (a_vb + 2 * r_psoas, self.vertebral_body_y + r_psoas, z_psoas),
        )
        if sl is not None:
            X, Y, Z = self.xyz(sl)
            radius = r_psoas * np.clip((z_psoas - Z) / (120.0 * k), 0.0, 1.0) ** 0.6
            radius = np.where(radius > 0, np.maximum(radius, self.min_in_plane), 0.0)
            for side in (-1.0, 1.0):
                cx = side * (a_vb + 0.8 * radius)
                inside = (X - cx) ** 2 + (Y - (self.vertebral_body_y - 2.0 * k)) ** 2 < radius**2
                self.put(sl, inside, "muscle")
        # vertebral column: bodies (cortical shell, trabecular core), discs, canal, lamina, processes
        cortex = max(2.0 * k, self.min_in_plane)
        period, disc = 36.0 * k, 9.0 * k
        offset = self.uniform(0.0, period)
        y_canal = self.vertebral_body_y - b_vb - 10.0 * k
        r_canal = max(8.0 * k, self.min_in_plane)
        lamina = max(6.0 * k, self.min_in_plane)
        sl = self.box(
            (-60.0 * k, -self.cavity_half_depth - 5.0, bottom), (60.0 * k, self.vertebral_body_y + b_vb + 5.0, top)
        )
        if sl is None:
            return
        X, Y, Z = self.xyz(sl)
        level = np.mod(Z - offset, period)
        is_disc = level < disc
        endplate = (level < disc + 0.5 * cortex) | (level > period - 0.5 * cortex)
        r_body = np.sqrt((X / a_vb) ** 2 + ((Y - self.vertebral_body_y) / b_vb) ** 2)
        vb = r_body < 1.0
        shell = r_body > 1.0 - cortex / b_vb
        self.put(sl, vb & ~is_disc & ~shell & ~endplate, "trabecular_bone")
        self.put(sl, vb & ~is_disc & (shell | endplate), "cortical_bone")
        self.put(sl, vb & is_disc, "disc")
        d_canal = np.sqrt(X * X + (Y - y_canal) ** 2)
        arch = ~is_disc & (d_canal >= r_canal) & (d_canal < r_canal + lamina) & (Y < y_canal + 0.5 * r_canal)
        spinous = np.sqrt(
            (X / max(4.0 * k, self.min_in_plane)) ** 2 + ((Y - (y_canal - r_canal - 14.0 * k)) / (16.0 * k)) ** 2
        )
        transverse = np.sqrt(
            ((np.abs(X) - 30.0 * k) / (16.0 * k)) ** 2
            + ((Y - y_canal - 3.0 * k) / max(5.0 * k, self.min_in_plane)) ** 2
        )
        lumbar = Z < self.dome_r - 60.0 * k
        self.put(sl, arch | (~is_disc & (spinous < 1.0)) | (~is_disc & lumbar & (transverse < 1.0)), "cortical_bone")
        self.put(sl, d_canal < r_canal, "csf")

    def _pelvis(self) -> None:
        """Iliac wings below the crest (near the aortic bifurcation): curved plates posterolaterally."""
        k = self.size_factor
        z_crest = self.aortic_bifurcation_z - self.uniform(0.0, 15.0) * k
        if z_crest < self.z_first:
            return
        half = max(5.0 * k, 0.8 * self.min_in_plane)
        for side in (-1.0, 1.0):
            cx, cy = side * 55.0 * k, -25.0 * k
            sl = self.box((cx - 70.0 * k, cy - 60.0 * k, self.z_first - 20.0), (cx + 70.0 * k, cy + 60.0 * k, z_crest))
            if sl is None:
                continue
            X, Y, Z = self.xyz(sl)
            dx, dy = X - cx, Y - cy
            rho = np.sqrt((dx / (50.0 * k)) ** 2 + (dy / (40.0 * k)) ** 2) + 1e-6
            radial = np.hypot(dx, dy) * (1.0 - 1.0 / rho)
            alpha = np.arctan2(dy, side * dx)
            wing = (np.abs(radial) < half) & (alpha > -1.7) & (alpha < 0.5) & (Z < z_crest)
            wing &= self.rho_cavity[sl] < 1.0
            self.put(sl, wing & (np.abs(radial) >= 0.5 * half), "cortical_bone")
            self.put(sl, wing & (np.abs(radial) < 0.5 * half), "trabecular_bone")

    def _hollow(
        self, sl: tuple, depth: np.ndarray, wall: float, lumen: Callable[[np.ndarray], np.ndarray], names: tuple
    ) -> None:
        """Paint a hollow organ: ``names[0]`` where ``0 < depth <= wall``, else ``lumen(mask) -> tissue ids``."""
        ok = self.allowed(sl) & (depth > 0)
        self.put(sl, ok & (depth <= wall), names[0])
        inner = ok & (depth > wall)
        view = self.tissue[sl]
        view[inner] = lumen(inner)

    def _bowel(self) -> None:
        k, rng = self.size_factor, self.rng
        wall = max(2.5 * k, 0.6 * self.min_in_plane)
        z_low = self.z_first - 20.0
        # small-bowel loops: fluid, gas or both (gas anterior, the non-dependent side of a supine patient)
        for _ in range(int(rng.integers(8, 17))):
            centre = (
                self.uniform(-65.0, 65.0) * k,
                self.uniform(0.0, 60.0) * k,
                self.uniform(self.aortic_bifurcation_z - 40.0 * k, 15.0 * k),
            )
            axes = (self.uniform(10.0, 14.0) * k, self.uniform(10.0, 14.0) * k, self.uniform(15.0, 30.0) * k)
            rot = _rotation(self.uniform(0, math.pi), self.uniform(0, math.pi), self.uniform(0, math.pi))
            sl, r, _ = self.ellipsoid(centre, axes, rot, self.wobble(2, 0.08))
            if sl is None:
                continue
            kind = rng.choice(3, p=(0.6, 0.15, 0.25))
            level = centre[1] + self.uniform(0.0, 0.7) * axes[1]
            depth = (1.0 - r) * min(axes)
            Y = self.Y[sl]
            fluid, gas = TISSUE_ID["bowel_fluid"], TISSUE_ID["gas"]

            def loop_lumen(mask: np.ndarray, kind: int = kind, level: float = level, Y: np.ndarray = Y) -> np.ndarray:
                if kind == 0:
                    return np.full(int(mask.sum()), fluid, dtype=np.uint8)
                if kind == 1:
                    return np.full(int(mask.sum()), gas, dtype=np.uint8)
                return np.where(Y[mask] > level, gas, fluid).astype(np.uint8)

            self._hollow(sl, depth, wall, loop_lumen, ("bowel_wall",))
        # colon frame: ascending, hepatic flexure, transverse, splenic flexure, descending; faeces with gas
        path = [
            (88.0, -5.0, z_low / k),
            (86.0, 0.0, -10.0),
            (75.0, 35.0, 5.0),
            (35.0, 62.0, -5.0),
            (-30.0, 62.0, 0.0),
            (-80.0, 25.0, 40.0),
            (-88.0, -10.0, 0.0),
            (-85.0, -5.0, z_low / k),
        ]
        points = [(x * k + self.jitter(4.0), y * k + self.jitter(4.0), z * k + self.jitter(4.0)) for x, y, z in path]
        radii = [self.uniform(17.0, 24.0) * k for _ in points]
        gas_level = self.uniform(-0.3, 0.6)
        for sl, depth, centre, radius in self.tube(points, radii):
            Y = self.Y[sl]
            pocket = self.field_mid[sl] > 1.2
            anterior = Y - centre[1] > gas_level * radius

            def colon_lumen(
                mask: np.ndarray, pocket: np.ndarray = pocket, anterior: np.ndarray = anterior
            ) -> np.ndarray:
                return np.where(pocket[mask] | anterior[mask], TISSUE_ID["gas"], TISSUE_ID["faeces"]).astype(np.uint8)

            self._hollow(sl, depth, wall, colon_lumen, ("bowel_wall",))

    def _paint_tube(
        self,
        points: list,
        radii: list,
        name: str,
        region: str = "abdomen",
        only: str | None = None,
        min_radius: float = 1.0,
    ) -> None:
        for sl, depth, _, _ in self.tube(points, radii, min_radius):
            mask = depth > 0
            mask &= (self.tissue[sl] == TISSUE_ID[only]) if only else self.allowed(sl, region)
            self.put(sl, mask, name)

    def _vessels(self) -> None:
        """Unlabelled vessels outside the organs (painted before them, so the organs win where they touch)."""
        k, jitter = self.size_factor, self.jitter
        conf = (
            10.0 * k + jitter(3.0),
            20.0 * k + jitter(3.0),
            15.0 * k + jitter(4.0),
        )  # portal confluence behind the pancreatic neck
        self.portal = [conf, (35.0 * k, 15.0 * k, 45.0 * k), (75.0 * k, 5.0 * k, 55.0 * k)]
        self.portal_confluence = conf
        self._paint_tube(self.portal, [7.0 * k, 7.0 * k, 5.0 * k], "portal_vein", "any")
        splenic = [
            conf,
            (-25.0 * k, 19.0 * k, 25.0 * k),
            (-58.0 * k, -3.0 * k, 35.0 * k),
            (-72.0 * k, -22.0 * k, 50.0 * k),
        ]
        self._paint_tube(splenic, [5.0 * k] * 4, "portal_vein")
        smv = [conf, (12.0 * k, 36.0 * k, -20.0 * k), (14.0 * k, 40.0 * k, -80.0 * k), (15.0 * k, 42.0 * k, -160.0 * k)]
        self._paint_tube(smv, [5.0 * k, 5.0 * k, 4.0 * k, 4.0 * k], "portal_vein")
        sma = [(-10.0 * k, 10.0 * k, 22.0 * k), (-5.0 * k, 30.0 * k, 10.0 * k), (-2.0 * k, 40.0 * k, -25.0 * k)]
        sma.append((0.0, 44.0 * k, -160.0 * k))
        self._paint_tube(sma, [4.0 * k] * 4, "artery", min_radius=0.7)
        rk, lk = self.kidney_r, self.kidney_l
        self._paint_tube(
            [(rk[0] - 14.0 * k, rk[1] + 8.0 * k, rk[2] + 3.0), (26.0 * k, 0.0, rk[2] + 10.0)], [5.0 * k] * 2, "vein"
        )
        lrv = [
            (lk[0] + 18.0 * k, lk[1] + 10.0 * k, lk[2] + 2.0),
            (-22.0 * k, 18.0 * k, lk[2] + 5.0),
            (18.0 * k, 6.0 * k, lk[2] + 5.0),
        ]
        self._paint_tube(lrv, [5.0 * k] * 3, "vein")
        # iliac arteries and veins below the bifurcation / confluence
        z_conf = self.aortic_bifurcation_z - 12.0 * k
        for side in (-1.0, 1.0):
            art = [
                (-8.0 * k, self.vertebral_body_y + 30.0 * k, self.aortic_bifurcation_z),
                (side * 40.0 * k, self.vertebral_body_y + 22.0 * k, self.aortic_bifurcation_z - 60.0 * k),
            ]
            art.append((side * 60.0 * k, self.vertebral_body_y + 32.0 * k, self.aortic_bifurcation_z - 140.0 * k))
            self._paint_tube(art, [6.0 * k] * 3, "artery")
            vein = [
                (22.0 * k, self.vertebral_body_y + 24.0 * k, z_conf),
                (side * 38.0 * k, self.vertebral_body_y + 14.0 * k, z_conf - 60.0 * k),
            ]
            vein.append((side * 56.0 * k, self.vertebral_body_y + 24.0 * k, z_conf - 140.0 * k))
            self._paint_tube(vein, [7.0 * k] * 3, "vein")

    def _kidney(self, centre: np.ndarray, side: float, prefix: str) -> None:
        """Kidney with cortex, medulla (pyramids), sinus fat and collecting system; the hilum faces anteromedially."""
        k = self.size_factor
        axes = (26.0 * k * self.uniform(0.9, 1.1), 21.0 * k * self.uniform(0.9, 1.1), self.kidney_len)
        # local z: the long axis, upper pole medial and posterior; local x: the hilum, facing anteromedially
        coronal, sagittal = math.radians(self.uniform(8.0, 18.0)), math.radians(self.uniform(10.0, 20.0))
        hilum = math.radians(self.uniform(20.0, 35.0))
        long_axis = np.array([-side * math.tan(coronal), -math.tan(sagittal), 1.0])
        rot = _frame(long_axis, np.array([-side * math.cos(hilum), math.sin(hilum), 0.0]))
        sl, r, q = self.ellipsoid(centre, axes, rot, self.wobble(2, 0.05))
        if sl is None:
            return
        ok = self.allowed(sl) & (r < 1.0)
        # sinus: an inner ellipsoid displaced towards the hilum (local +x points medially after the rotation)
        r_sinus = np.sqrt(((q[0] - 0.55) / 0.6) ** 2 + (q[1] / 0.35) ** 2 + (q[2] / 0.6) ** 2)
        pelvis = r_sinus < 0.55
        sinus = r_sinus < 1.0
        psi = np.arctan2(q[1], q[0])
        medulla = r < 0.78 - 0.1 * (1.0 + np.cos(6.0 * psi + 3.0 * q[2]))
        self.put(sl, ok, f"{prefix}_cortex")
        self.put(sl, ok & medulla, f"{prefix}_medulla")
        self.put(sl, ok & sinus, "sinus_fat")
        self.put(sl, ok & pelvis, f"{prefix}_pelvis")

    def _organs(self) -> None:
        k, jitter, uniform = self.size_factor, self.jitter, self.uniform
        # liver: right lobe + left lobe under the domes, above a sloping inferior surface
        right = (58.0 * k + jitter(5.0), 5.0 * k + jitter(5.0), self.dome_r - 75.0 * k)
        right_axes = (70.0 * k * uniform(0.9, 1.1), 75.0 * k * uniform(0.9, 1.1), 80.0 * k * uniform(0.9, 1.1))
        left = (-10.0 * k + jitter(5.0), 50.0 * k + jitter(4.0), self.dome_r - 45.0 * k)
        left_axes = (55.0 * k * uniform(0.85, 1.15), 28.0 * k * uniform(0.9, 1.1), 36.0 * k * uniform(0.9, 1.1))
        z_inf, slope = self.dome_r - 160.0 * k + jitter(6.0), uniform(0.5, 0.8)
        for centre, axes, wob in ((right, right_axes, 0.06), (left, left_axes, 0.08)):
            sl, r, _ = self.ellipsoid(centre, axes, _rotation(az=jitter(0.1)), self.wobble(3, wob))
            if sl is not None:
                X, Z = self.X[sl], self.Z[sl]
                self.put(sl, (r < 1.0) & (Z > z_inf + slope * (100.0 * k - X)) & self.allowed(sl), "liver")
        # intrahepatic vessels: portal branches and hepatic veins (liver label, venous enhancement)
        porta = self.portal[1]
        branches = [
            ([porta, (75.0 * k, 5.0 * k, 55.0 * k), (95.0 * k, -15.0 * k, 70.0 * k)], [5.0 * k, 4.0 * k, 3.0 * k]),
            ([porta, (10.0 * k, 35.0 * k, 65.0 * k), (-30.0 * k, 50.0 * k, 85.0 * k)], [4.5 * k, 3.5 * k, 3.0 * k]),
        ]
        ivc_top = (24.0 * k, -4.0 * k, self.dome_r - 30.0 * k)
        for end in (
            (90.0 * k, -15.0 * k, self.dome_r - 55.0 * k),
            (45.0 * k, 40.0 * k, self.dome_r - 50.0 * k),
            (-20.0 * k, 45.0 * k, self.dome_r - 40.0 * k),
        ):
            mid = tuple(0.5 * (a + b) + jitter(4.0) for a, b in zip(ivc_top, end))
            branches.append(([ivc_top, mid, end], [5.0 * k, 4.0 * k, 3.0 * k]))
        for i, (points, radii) in enumerate(branches):
            name = "liver_portal_vein" if i < 2 else "liver_hepatic_vein"
            self._paint_tube(points, radii, name, only="liver", min_radius=0.6)
        # gallbladder under the liver's inferior surface, fundus anterior-inferior
        gb = (55.0 * k + jitter(4.0), 42.0 * k + jitter(4.0), 5.0 * k + jitter(5.0))
        gb_axes = (15.0 * k * uniform(0.8, 1.2), 15.0 * k * uniform(0.8, 1.2), 38.0 * k * uniform(0.8, 1.2))
        sl, r, _ = self.ellipsoid(
            gb, gb_axes, _rotation(ax=math.radians(uniform(20.0, 45.0)), az=jitter(0.2)), self.wobble(2, 0.06)
        )
        if sl is not None:
            self.put(sl, (r < 1.0) & self.allowed(sl), "gallbladder")
        wall = max(4.0 * k, 0.8 * self.min_in_plane)
        # stomach: fundus under the left dome, body, antrum, pylorus; contents fluid or food, gas anteriorly
        path = [
            (-55.0, -5.0, self.dome_l / k - 25.0),
            (-55.0, 20.0, 70.0),
            (-38.0, 50.0, 45.0),
            (-5.0, 52.0, 28.0),
            (22.0, 40.0, 30.0),
        ]
        points = [(x * k + jitter(4.0), y * k + jitter(4.0), z * k + jitter(4.0)) for x, y, z in path]
        radii = [
            32.0 * k * uniform(0.85, 1.1),
            28.0 * k * uniform(0.85, 1.1),
            22.0 * k * uniform(0.85, 1.1),
            16.0 * k,
            11.0 * k,
        ]
        food = self.rng.random() < 0.4
        gas_level = uniform(0.1, 0.7)
        contents = TISSUE_ID["stomach_food"] if food else TISSUE_ID["stomach_fluid"]
        for sl, depth, centre, radius in self.tube(points, radii):
            anterior = self.Y[sl] - centre[1] > gas_level * radius

            def stomach_lumen(mask: np.ndarray, anterior: np.ndarray = anterior) -> np.ndarray:
                return np.where(anterior[mask], TISSUE_ID["stomach_gas"], contents).astype(np.uint8)

            self._hollow(sl, depth, wall, stomach_lumen, ("stomach_wall",))
        self.gastroesophageal_junction = (-30.0 * k + jitter(3.0), 12.0 * k + jitter(3.0), self.dome_l - 35.0 * k)
        # duodenum: bulb, descending, horizontal (between aorta and SMA), ascending to the DJ flexure
        path = [(22.0, 40.0, 30.0), (44.0, 28.0, 32.0), (52.0, 12.0, 22.0), (52.0, 8.0, -12.0), (30.0, 20.0, -28.0)]
        path += [(0.0, 26.0, -30.0), (-22.0, 22.0, -18.0), (-30.0, 26.0, 0.0)]
        points = [(x * k + jitter(3.0), y * k + jitter(3.0), z * k + jitter(3.0)) for x, y, z in path]
        radii = [uniform(10.0, 13.0) * k for _ in points]
        bubble = self.rng.random() < 0.5
        for sl, depth, centre, radius in self.tube(points, radii):
            anterior = (self.Y[sl] - centre[1] > 0.5 * radius) & bubble

            def duodenum_lumen(mask: np.ndarray, anterior: np.ndarray = anterior) -> np.ndarray:
                return np.where(anterior[mask], TISSUE_ID["duodenum_gas"], TISSUE_ID["duodenum_fluid"]).astype(np.uint8)

            self._hollow(sl, depth, max(2.5 * k, 0.6 * self.min_in_plane), duodenum_lumen, ("duodenum_wall",))
        # spleen: left-posterior under the left dome, long axis along the ribs
        centre = (-78.0 * k + jitter(4.0), -40.0 * k + jitter(4.0), self.dome_l - 55.0 * k + jitter(5.0))
        axes = (24.0 * k * uniform(0.85, 1.15), 50.0 * k * uniform(0.85, 1.15), 50.0 * k * uniform(0.85, 1.15))
        sl, r, _ = self.ellipsoid(centre, axes, _rotation(az=math.radians(uniform(25.0, 45.0))), self.wobble(3, 0.07))
        if sl is not None:
            self.put(sl, (r < 1.0) & self.allowed(sl), "spleen")
        # pancreas: head in the duodenal C-loop, neck anterior to the portal confluence, body over the aorta, tail
        path = [(30.0, 24.0, -2.0), (30.0, 24.0, 8.0), (8.0, 32.0, 18.0), (-25.0, 30.0, 25.0), (-58.0, 8.0, 35.0)]
        path.append((-72.0, -8.0, 42.0))
        points = [(x * k + jitter(3.0), y * k + jitter(3.0), z * k + jitter(3.0)) for x, y, z in path]
        radii = [
            13.0 * k * uniform(0.85, 1.15),
            14.0 * k * uniform(0.85, 1.15),
            10.0 * k,
            10.0 * k * uniform(0.85, 1.15),
            9.0 * k,
            8.0 * k,
        ]
        self._paint_tube(points, radii, "pancreas")
        # kidneys
        self._kidney(self.kidney_r, 1.0, "right_kidney")
        self._kidney(self.kidney_l, -1.0, "left_kidney")
        # IVC: from the confluence of the iliac veins through the liver to the right atrium
        z_conf = self.aortic_bifurcation_z - 12.0 * k
        path = [
            (22.0, 2.0, z_conf / k),
            (22.0, 3.0, 40.0),
            (24.0, -4.0, self.dome_r / k - 40.0),
            (15.0, 8.0, self.dome_r / k + 12.0),
        ]
        points = [(x * k + jitter(2.0), y * k + jitter(2.0), z * k) for x, y, z in path]
        points[0] = (points[0][0], self.vertebral_body_y + 24.0 * k, z_conf)
        self._paint_tube(points, [10.0 * k * uniform(0.9, 1.1)] * 4, "ivc", "any")
        # aorta: descending thoracic (left anterolateral of the spine) to the bifurcation; wall calcifications
        r_ao = 11.0 * k * uniform(0.9, 1.1)
        y_ao = self.vertebral_body_y + 16.0 * k + r_ao + 2.0 * k
        path = [
            (-28.0 * k, self.vertebral_body_y + 6.0 * k, self.z_last + 20.0),
            (-18.0 * k, self.vertebral_body_y + 14.0 * k, self.dome_l - 20.0 * k),
            (-12.0 * k, y_ao, 20.0 * k),
            (-8.0 * k, y_ao + 2.0 * k, self.aortic_bifurcation_z),
        ]
        self._paint_tube(path, [1.1 * r_ao, r_ao, 0.95 * r_ao, 0.85 * r_ao], "aorta", "any")
        for _ in range(int(self.rng.integers(0, 4))):
            t = self.uniform(0.55, 0.95)
            z = path[2][2] + (self.aortic_bifurcation_z - path[2][2]) * (t - 0.55) / 0.4
            angle = self.uniform(0.0, 2 * math.pi)
            p = (-10.0 * k + r_ao * math.cos(angle), y_ao + 1.0 * k + r_ao * math.sin(angle), z)
            sl, r, _ = self.ellipsoid(p, (3.0 * k, 3.0 * k, 4.0 * k), clamp=False)
            if sl is not None:
                self.put(sl, (r < 1.0) & (self.tissue[sl] == TISSUE_ID["aorta"]), "aorta_calcification")
        # esophagus: anterior to the spine, right of the aorta, to the cardia through the hiatus
        path = [
            (2.0 * k, self.vertebral_body_y + 28.0 * k, self.z_last + 20.0),
            (-8.0 * k, 10.0 * k, self.dome_l - 10.0 * k),
            (-18.0 * k, 16.0 * k, self.dome_l - 25.0 * k),
            tuple(float(v) for v in self.gastroesophageal_junction),
        ]
        gas = self.rng.random() < 0.5
        for sl, depth, _, radius in self.tube(path, [8.0 * k] * 4, min_radius=1.3):
            ok = (depth > 0) & self.allowed(sl, "any")
            self.put(sl, ok, "esophagus_wall")
            if gas:
                self.put(sl, ok & (depth > 0.6 * radius), "esophagus_lumen")
        # adrenals: thin plates above / medial to the upper poles, oriented antero-posteriorly
        rk, lk = self.kidney_r, self.kidney_l
        for name, centre, angle in (
            (
                "right_adrenal",
                (34.0 * k + jitter(3.0), -20.0 * k + jitter(3.0), rk[2] + self.kidney_len + 8.0 * k),
                uniform(50.0, 80.0),
            ),
            (
                "left_adrenal",
                (-32.0 * k + jitter(3.0), -14.0 * k + jitter(3.0), lk[2] + self.kidney_len - 5.0 * k),
                uniform(100.0, 130.0),
            ),
        ):
            axes = (13.0 * k * uniform(0.85, 1.15), 3.0 * k, 16.0 * k * uniform(0.85, 1.15))
            rot = _rotation(az=math.radians(angle))
            sl, r, _ = self.ellipsoid(centre, axes, rot, self.wobble(2, 0.05), min_size=(2.0, 1.2, 1.5))
            if sl is not None:
                self.put(sl, (r < 1.0) & self.allowed(sl, "any"), name)
