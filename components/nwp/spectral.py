"""The background-error covariance of the 3D-Var: spectral, per state variable and total wavenumber.

``B`` is block diagonal in dinosaur's real spherical-harmonic coefficients. For each state
variable ``f`` (vorticity, divergence, temperature variation, log surface pressure) and total
wavenumber ``l`` it is a ``(K_f, K_f)`` vertical covariance over the model layers, the same
for every zonal wavenumber ``m``. Horizontal correlations are therefore homogeneous and
isotropic, with a spectrum that varies with height; vertical correlations vary with scale.
This is the classical form of Parrish & Derber (1992, Mon. Wea. Rev. 120, 1747-1763) and of
ECMWF's early spectral ``J_b`` (Rabier et al. 1998, QJRMS 124, 1809-1829), without the
balance operator (the variables are univariate).

The control-variable transform is ``x = x_b + S chi`` with ``S S^T = B``, ``S`` the symmetric
square root of each block; ``J_b = chi^T chi / 2``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: State variables of the control vector (dinosaur ``primitive_equations.State`` fields).
FIELDS = ("vorticity", "divergence", "temperature_variation", "log_surface_pressure")


class SpectralCovariance:
    """``B = S S^T`` with ``S`` a (K, K) block per (state variable, total wavenumber).

    Parameters
    ----------
    sqrt : mapping
        State variable -> (L, K, K) float64: the symmetric square root of the vertical
        covariance of each total wavenumber ``l`` (nondimensional units squared).
    mask : numpy.ndarray
        (M, L) bool: the valid coefficients of dinosaur's modal layout (``grid.mask``).

    Raises
    ------
    ValueError
        If a variable is missing or the shapes disagree with ``mask``.
    """

    def __init__(self, sqrt: Mapping[str, np.ndarray], mask: np.ndarray) -> None:
        self.mask = np.asarray(mask, bool)
        missing = [f for f in FIELDS if f not in sqrt]
        if missing:
            raise ValueError(f"background-error covariance lacks {missing}")
        self.sqrt = {f: np.asarray(sqrt[f], np.float64) for f in FIELDS}
        for f, s in self.sqrt.items():
            if s.ndim != 3 or s.shape[0] != self.mask.shape[1] or s.shape[1] != s.shape[2]:
                raise ValueError(f"{f}: expected (L={self.mask.shape[1]}, K, K) blocks, got {s.shape}")

    @classmethod
    def estimate(cls, differences: Mapping[str, np.ndarray], mask: np.ndarray) -> SpectralCovariance:
        """Sample covariance of background-error proxies, pooled over ``m`` for each ``l``.

        Parameters
        ----------
        differences : mapping
            State variable -> (n_samples, K, M, L) modal differences (e.g. forecast minus
            forecast, or time-lagged differences), mean removed or not (they are treated as
            zero-mean errors).
        mask : numpy.ndarray
            (M, L) valid coefficients.

        Returns
        -------
        SpectralCovariance

        Raises
        ------
        ValueError
            If there are no samples.
        """
        mask = np.asarray(mask, bool)
        sqrt = {}
        for f in FIELDS:
            d = np.asarray(differences[f], np.float64)
            if d.shape[0] == 0:
                raise ValueError("no samples to estimate the background-error covariance")
            _n, k, _, n_l = d.shape
            blocks = np.zeros((n_l, k, k))
            for ll in range(n_l):
                valid = mask[:, ll]
                if not valid.any():
                    continue
                x = np.moveaxis(d[:, :, valid, ll], 1, -1).reshape(-1, k)  # (samples * m, K)
                cov = x.T @ x / len(x)
                w, v = np.linalg.eigh(cov)
                blocks[ll] = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
            sqrt[f] = blocks
        return cls(sqrt, mask)

    def scaled(self, factor: float) -> SpectralCovariance:
        """``factor * B`` (variances times ``factor``; correlations unchanged)."""
        return SpectralCovariance({f: s * np.sqrt(factor) for f, s in self.sqrt.items()}, self.mask)

    def truncated(self, n_m: int, n_l: int) -> SpectralCovariance:
        """The covariance of a coarser triangular truncation: the first ``n_m`` zonal and
        ``n_l`` total wavenumber rows of dinosaur's layout (e.g. T42 (85, 44) -> T21 (43, 23))."""
        return SpectralCovariance({f: s[:n_l] for f, s in self.sqrt.items()}, self.mask[:n_m, :n_l])

    def jax_arrays(self) -> tuple[dict[str, object], object]:
        """``(sqrt, mask)`` as float32 jax arrays, the arguments of :func:`apply_sqrt`."""
        import jax.numpy as jnp

        return {f: jnp.asarray(s, jnp.float32) for f, s in self.sqrt.items()}, jnp.asarray(self.mask, jnp.float32)

    def apply_sqrt(self, chi: Mapping[str, object]) -> dict[str, object]:
        """``S chi`` per variable: (K, M, L) arrays (numpy or jax) -> the same shape."""
        return apply_sqrt(*self.jax_arrays(), chi)

    def variance(self, field: str) -> np.ndarray:
        """(K, L) variance per layer and total wavenumber of one coefficient."""
        s = self.sqrt[field]
        return np.einsum("lij,lij->il", s, s)

    def to_npz(self, path: str) -> None:
        """Save (``numpy.savez``)."""
        np.savez(path, mask=self.mask, **{f: s for f, s in self.sqrt.items()})

    @classmethod
    def from_npz(cls, path: str) -> SpectralCovariance:
        """Load what :meth:`to_npz` saved."""
        with np.load(path) as z:
            return cls({f: z[f] for f in FIELDS}, z["mask"])


def apply_sqrt(sqrt: Mapping[str, object], mask: object, chi: Mapping[str, object]) -> dict[str, object]:
    """``S chi``: for every variable ``f``, ``x[:, m, l] = sqrt[f][l] @ chi[f][:, m, l]``, masked.

    Parameters
    ----------
    sqrt : mapping
        Variable -> (L, K, K) blocks (:attr:`SpectralCovariance.sqrt`).
    mask : array
        (M, L) 1 for valid coefficients, else 0.
    chi : mapping
        Variable -> (K, M, L) control vector.

    Returns
    -------
    dict
        Variable -> (K, M, L) increment (jax arrays).
    """
    import jax.numpy as jnp

    return {f: jnp.einsum("lij,jml->iml", sqrt[f], chi[f]) * mask for f in FIELDS}


def truncate_state(fields: Mapping[str, np.ndarray], n_m: int, n_l: int) -> dict[str, np.ndarray]:
    """A state in a coarser truncation: (..., M, L) -> (..., n_m, n_l), the highest total
    wavenumber of the target zeroed (dinosaur clips it, ``Grid.clip_wavenumbers``)."""
    out = {}
    for f, x in fields.items():
        y = np.array(np.asarray(x)[..., :n_m, :n_l])
        y[..., n_l - 1] = 0.0
        out[f] = y
    return out


def pad_state(fields: Mapping[str, np.ndarray], n_m: int, n_l: int) -> dict[str, np.ndarray]:
    """A state in a finer truncation, new coefficients zero: (..., M, L) -> (..., n_m, n_l)
    (exact spectral interpolation of a coarse state to a finer Gaussian grid)."""
    out = {}
    for f, x in fields.items():
        x = np.asarray(x)
        y = np.zeros((*x.shape[:-2], n_m, n_l), x.dtype)
        y[..., : x.shape[-2], : x.shape[-1]] = x
        out[f] = y
    return out


__all__ = ["FIELDS", "SpectralCovariance", "apply_sqrt", "pad_state", "truncate_state"]
