"""The classical NWP baseline of the OSSE: cycled 3D-Var analyses and dycore forecasts.

- :mod:`~obscast.components.nwp.spectral`: the background-error covariance ``B``, homogeneous
  and isotropic, a vertical covariance per state variable and total wavenumber;
- :mod:`~obscast.components.nwp.operators`: the observation operators of every simulated
  observation kind, in JAX (the same sampling as the OSSE's simulation);
- :mod:`~obscast.components.nwp.var3d`: the 3D-Var (3D-FGAT) minimisation;
- :mod:`~obscast.components.nwp.cycle`: the cycle (analysis, 6 h forecast as the next
  background) and the forecasts of the identical and fraternal twins.

``jax`` and ``dinosaur`` are imported inside the functions that need them.
"""
