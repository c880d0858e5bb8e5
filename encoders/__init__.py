"""Encoders mapping each observation family onto the shared latent grid."""

from __future__ import annotations

from torch import nn

from obscast.encoders.gridded import GriddedEncoder
from obscast.encoders.setconv import SetConvEncoder, pressure_from_height

#: Encoder classes by the ``type`` name used in source specs.
ENCODERS: dict[str, type[nn.Module]] = {"setconv": SetConvEncoder, "gridded": GriddedEncoder}


def build_encoder(type_name: str, **kwargs) -> nn.Module:
    """Instantiate the encoder registered as ``type_name``.

    Parameters
    ----------
    type_name : str
        A key of :data:`ENCODERS`.
    **kwargs
        Constructor arguments of that encoder (e.g. ``variables``, ``grid``, ``out_channels``).

    Returns
    -------
    torch.nn.Module
        The encoder, whose ``forward`` returns ``(latent, density)``.

    Raises
    ------
    ValueError
        If ``type_name`` is not registered.
    """
    if type_name not in ENCODERS:
        raise ValueError(f"unknown encoder type {type_name!r}; allowed: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[type_name](**kwargs)


__all__ = ["ENCODERS", "GriddedEncoder", "SetConvEncoder", "build_encoder", "pressure_from_height"]
