"""Cost of the one bilinear interpolation (components/data/interp.py) against the numpy code it replaced.

Two uses, each timed as a ratio new / old in the same process:

* dataset: station truth of ``--times`` times x ``--channels`` channels on a ``--grid`` grid at
  ``--points`` fixed stations (weights once, then applied to every field);
* simulator: per time step, weights for ``--points`` new positions, then applied to a
  (level, lat, lon) field and a surface field (as ``_truth_group`` does per kind and time).

Run::

    .venv/bin/python benchmarks/interp_benchmark.py [--times 600] [--channels 10] [--grid 64x128] [--points 7000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from obscast.components.data.interp import PointInterpolator


def _old_weights(src_lat, src_lon, lat, lon):
    """The former ``components.data.obs.point_weights``."""
    i = np.clip(np.searchsorted(src_lat, lat, side="right") - 1, 0, src_lat.size - 2)
    ti = np.clip((lat - src_lat[i]) / (src_lat[i + 1] - src_lat[i]), 0.0, 1.0)
    n = src_lon.size
    ext = np.append(src_lon, src_lon[0] + 360.0)
    x = src_lon[0] + np.mod(lon - src_lon[0], 360.0)
    j = np.clip(np.searchsorted(ext, x, side="right") - 1, 0, n - 1)
    tj = np.clip((x - ext[j]) / (ext[j + 1] - ext[j]), 0.0, 1.0)
    j1 = (j + 1) % n
    index = np.stack([i * n + j, i * n + j1, (i + 1) * n + j, (i + 1) * n + j1], axis=1)
    weight = np.stack([(1 - ti) * (1 - tj), (1 - ti) * tj, ti * (1 - tj), ti * tj], axis=1)
    return index.astype(np.int64), weight.astype(np.float32)


def _old_apply(fields, index, weight):
    """The former ``components.data.obs.interpolate_points``."""
    flat = fields.reshape(*fields.shape[:-2], -1)
    return (flat[..., index] * weight).sum(-1).astype(np.float32)


def _timed(fn, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--times", type=int, default=600)
    ap.add_argument("--channels", type=int, default=10)
    ap.add_argument("--grid", default="64x128")
    ap.add_argument("--points", type=int, default=7000)
    ap.add_argument("--steps", type=int, default=50, help="simulator time steps")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    nlat, nlon = (int(x) for x in a.grid.split("x"))
    rng = np.random.default_rng(0)
    lat = -90 + 180 / nlat * (np.arange(nlat) + 0.5)
    lon = np.arange(nlon) * 360 / nlon
    fields = rng.normal(size=(a.times, a.channels, nlat, nlon)).astype(np.float32)
    plat, plon = rng.uniform(-90, 90, a.points), rng.uniform(-180, 180, a.points)

    old = _timed(lambda: _old_apply(fields, *_old_weights(lat, lon, plat, plon)), a.repeat)
    new = _timed(lambda: PointInterpolator(lat, lon, plat, plon)(fields), a.repeat)
    diff = np.abs(_old_apply(fields, *_old_weights(lat, lon, plat, plon)) - PointInterpolator(lat, lon, plat, plon)(fields)).max()
    print(f"dataset   {a.times} x {a.channels} x {nlat}x{nlon} -> {a.points}: old {old:.3f} s, new {new:.3f} s, "
          f"new/old {new / old:.2f} (max |diff| {diff:.1e})")

    levels = rng.normal(size=(8, nlat, nlon))
    surface = rng.normal(size=(nlat, nlon))
    pos = [(rng.uniform(-90, 90, a.points), rng.uniform(-180, 180, a.points)) for _ in range(a.steps)]

    def sim_old():
        for la, lo in pos:
            idx, w = _old_weights(lat, lon, la, lo)
            _old_apply(levels, idx, w), _old_apply(surface, idx, w)

    def sim_new():
        for la, lo in pos:
            h = PointInterpolator(lat, lon, la, lo)
            h(levels), h(surface)

    old = _timed(sim_old, a.repeat)
    new = _timed(sim_new, a.repeat)
    print(f"simulator {a.steps} steps x {a.points} points, 8 levels + surface: old {old:.3f} s, new {new:.3f} s, new/old {new / old:.2f}")


if __name__ == "__main__":
    main()
