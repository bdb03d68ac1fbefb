"""Synthetic BV2 fields with known truth, for validating the potency analysis.

Resting BV2 cells are round, 10–15 µm across; LPS-activated cells are 25–30 µm across,
polymorphic, with a few thick projections (Gibson 2012). A field has uneven illumination,
camera noise and some touching cells, and is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass
class SyntheticField:
    """A synthetic field and its truth: `labels` (0 = background, cell i has label i + 1) and
    `activated` (per cell, label order)."""

    image: np.ndarray
    labels: np.ndarray
    activated: np.ndarray
    pixel_size_um: float

    @property
    def true_activation_fraction(self) -> float:
        """Fraction of activated cells among all cells, border cells included."""
        return float(self.activated.mean()) if self.activated.size else 0.0

    def interior_activation_fraction(self) -> float:
        """Fraction of activated cells among cells not touching the field edge (what the potency
        measurement scores)."""
        touching = np.zeros(self.activated.size + 1, dtype=bool)
        for edge in (self.labels[0], self.labels[-1], self.labels[:, 0], self.labels[:, -1]):
            touching[edge] = True
        interior = ~touching[1:]
        return float(self.activated[interior].mean()) if interior.any() else 0.0

    def interior_cell_count(self) -> int:
        """Number of cells not touching the field edge."""
        touching = np.zeros(self.activated.size + 1, dtype=bool)
        for edge in (self.labels[0], self.labels[-1], self.labels[:, 0], self.labels[:, -1]):
            touching[edge] = True
        return int((~touching[1:]).sum())


def _cell_shape(rng: np.random.Generator, activated: bool, pixel_size_um: float) -> tuple[np.ndarray, np.ndarray]:
    """A cell's mask and its relative thickness profile on a small square patch centred on it."""
    if activated:
        outer_radius_um = rng.uniform(12.5, 15.0)
    else:
        outer_radius_um = rng.uniform(5.0, 7.5)
    half = int(np.ceil(outer_radius_um / pixel_size_um)) + 2
    coords = (np.arange(-half, half + 1) * pixel_size_um).astype(np.float32)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    if not activated:
        squash = rng.uniform(0.85, 1.0)
        angle = rng.uniform(0, np.pi)
        u = x * np.cos(angle) + y * np.sin(angle)
        v = (-x * np.sin(angle) + y * np.cos(angle)) / squash
        distance = np.sqrt(u**2 + v**2) / outer_radius_um
        mask = distance <= 1.0
        thickness = np.maximum(np.sqrt(np.clip(1 - distance**2, 0, 1)), 0.5) * mask
        return mask, thickness
    # Activated: an irregular body with three to five thick, tapering projections.
    body_radius_um = rng.uniform(7.5, 9.5)
    theta = np.arctan2(y, x)
    radius = np.hypot(x, y)
    wobble = 1 + 0.12 * np.sin(2 * theta + rng.uniform(0, 2 * np.pi)) + 0.08 * np.sin(3 * theta + rng.uniform(0, 2 * np.pi))
    body = radius <= body_radius_um * wobble
    thickness = np.sqrt(np.clip(1 - (radius / (body_radius_um * wobble)) ** 2, 0, 1))
    mask = body.copy()
    count = int(rng.integers(3, 6))
    base_angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    for direction in base_angles:
        length_um = outer_radius_um * rng.uniform(0.85, 1.0)
        width_um = rng.uniform(4.0, 6.0)
        along = x * np.cos(direction) + y * np.sin(direction)
        across = -x * np.sin(direction) + y * np.cos(direction)
        local_width = width_um * (1 - 0.5 * np.clip(along / length_um, 0, 1))
        arm = (along >= 0) & (along <= length_um) & (np.abs(across) <= local_width / 2)
        mask |= arm
        thickness = np.where(arm & ~body, np.maximum(thickness, 0.6), thickness)
    return mask, np.maximum(thickness, 0.5) * mask


def synthetic_field(
    shape: tuple[int, int] = (1024, 1024),
    cell_count: int = 250,
    activation_fraction: float = 0.3,
    pixel_size_um: float = 0.65,
    touching_fraction: float = 0.1,
    seed: int | np.random.Generator = 0,
    dtype: type = np.uint16,
) -> SyntheticField:
    """A BV2-like field of `cell_count` cells, about `activation_fraction` of them activated
    (exactly round(cell_count × fraction) cells are drawn activated; the count that fit in the
    field is in the truth). About `touching_fraction` of the cells are placed touching a
    neighbour. The image is 16-bit by default (background ≈ 1000 ADU with a smooth illumination
    gradient of ±30 %, cells 1200–3000 ADU above it at the soma and half that at the edge, Gaussian noise
    SD 120 ADU)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rows, cols = shape
    activated_flags = np.zeros(cell_count, dtype=bool)
    activated_flags[: int(round(cell_count * activation_fraction))] = True
    rng.shuffle(activated_flags)

    labels = np.zeros(shape, dtype=np.int32)
    signal = np.zeros(shape, dtype=np.float32)
    occupied = np.zeros(shape, dtype=bool)
    placed_centres: list[tuple[float, float, float]] = []
    kept_flags: list[bool] = []
    for is_activated in activated_flags:
        mask, thickness = _cell_shape(rng, bool(is_activated), pixel_size_um)
        half = mask.shape[0] // 2
        brightness = rng.uniform(1200, 3000)
        for _attempt in range(30):
            if placed_centres and rng.random() < touching_fraction:
                other_r, other_c, other_radius = placed_centres[int(rng.integers(len(placed_centres)))]
                angle = rng.uniform(0, 2 * np.pi)
                distance = 0.92 * (other_radius + half - 2)
                centre_r = int(round(other_r + distance * np.sin(angle)))
                centre_c = int(round(other_c + distance * np.cos(angle)))
                allowed_overlap = int(mask.sum() * 0.06)
            else:
                centre_r = int(rng.integers(-half // 2, rows + half // 2))
                centre_c = int(rng.integers(-half // 2, cols + half // 2))
                allowed_overlap = 0
            r0, c0 = centre_r - half, centre_c - half
            pr0, pc0 = max(0, -r0), max(0, -c0)
            pr1 = mask.shape[0] - max(0, r0 + mask.shape[0] - rows)
            pc1 = mask.shape[1] - max(0, c0 + mask.shape[1] - cols)
            if pr1 <= pr0 or pc1 <= pc0:
                continue
            window = (slice(r0 + pr0, r0 + pr1), slice(c0 + pc0, c0 + pc1))
            patch_mask = mask[pr0:pr1, pc0:pc1]
            if patch_mask.sum() < 0.4 * mask.sum():
                continue
            if (occupied[window] & patch_mask).sum() > allowed_overlap:
                continue
            label = len(kept_flags) + 1
            free = patch_mask & ~occupied[window]
            labels[window][free] = label
            occupied[window] |= patch_mask
            signal[window] = np.maximum(signal[window], brightness * thickness[pr0:pr1, pc0:pc1] * patch_mask)
            placed_centres.append((float(centre_r), float(centre_c), float(half)))
            kept_flags.append(bool(is_activated))
            break

    signal = ndi.gaussian_filter(signal, 0.7 / pixel_size_um)
    yy = np.linspace(-1, 1, rows, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, cols, dtype=np.float32)[None, :]
    tilt = rng.uniform(-1, 1, 2)
    illumination = 1 + 0.2 * (tilt[0] * yy + tilt[1] * xx) - 0.1 * (xx**2 + yy**2)
    image = 1000 * illumination + signal * illumination + rng.normal(0, 120, shape).astype(np.float32)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        scale = 1.0 if info.max >= 65535 else info.max / 6000.0
        image = np.clip(np.rint(image * scale), info.min, info.max).astype(dtype)
    else:
        image = image.astype(dtype)
    return SyntheticField(
        image=image, labels=labels, activated=np.asarray(kept_flags, dtype=bool), pixel_size_um=pixel_size_um
    )
