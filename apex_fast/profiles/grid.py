"""Multilinear interpolation of log(time) on measured grids, with a tag per point (measured,
interpolated or clamped outside the grid; above the top the edge value scales linearly)."""

from __future__ import annotations

import numpy as np

MEASURED, INTERPOLATED, CLAMPED = 0, 1, 2
TAG_NAMES = {MEASURED: "measured", INTERPOLATED: "interpolated", CLAMPED: "clamped"}


def _axis_weights(axis: np.ndarray, x: np.ndarray):
    """Lower index, weight of the upper neighbour, exact-hit and outside flags, scale above top.

    axis: sorted log coordinates; x: log query values.
    """
    lo, hi = axis[0], axis[-1]
    xc = np.clip(x, lo, hi)
    outside = (x < lo - 1e-9) | (x > hi + 1e-9)
    above = np.maximum(x - hi, 0.0)  # log of the linear scale factor above the top
    if len(axis) == 1:
        i0 = np.zeros(x.shape, dtype=np.int64)
        return i0, np.zeros(x.shape), np.ones(x.shape, dtype=bool), outside, above
    i0 = np.clip(np.searchsorted(axis, xc, side="right") - 1, 0, len(axis) - 2)
    w = (xc - axis[i0]) / (axis[i0 + 1] - axis[i0])
    exact = (np.abs(w) < 1e-9) | (np.abs(w - 1.0) < 1e-9)
    return i0, w, exact, outside, above


def interp_grid(
    axes: list[np.ndarray], logv: np.ndarray, queries: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Multilinear interpolation of logv (shape = axis lengths) at log coordinates `queries`.

    Returns (value, tag) with value = exp(interpolated log value) x linear scale above the top.
    """
    qs = np.broadcast_arrays(*[np.asarray(q, dtype=np.float64) for q in queries])
    shape = qs[0].shape
    parts = [_axis_weights(ax, q.reshape(-1)) for ax, q in zip(axes, qs, strict=True)]
    npts = qs[0].size
    acc = np.zeros(npts)
    nd = len(axes)
    for corner in range(1 << nd):
        idx = []
        wt = np.ones(npts)
        for d in range(nd):
            i0, w, *_ = parts[d]
            up = (corner >> d) & 1
            if len(axes[d]) == 1:
                if up:
                    wt = wt * 0.0
                idx.append(i0)
                continue
            idx.append(i0 + up)
            wt = wt * (w if up else 1.0 - w)
        if not wt.any():
            continue
        acc += wt * logv[tuple(idx)]
    scale = np.zeros(npts)
    exact = np.ones(npts, dtype=bool)
    outside = np.zeros(npts, dtype=bool)
    for _, _, ex, out, above in parts:
        exact &= ex
        outside |= out
        scale += above
    tag = np.where(outside, CLAMPED, np.where(exact, MEASURED, INTERPOLATED)).astype(np.int8)
    return np.exp(acc + scale).reshape(shape), tag.reshape(shape)
