"""Decoders from the latent grid to gridded fields and to station points."""

from __future__ import annotations

from decoders.gridded import GriddedDecoder
from decoders.station import StationDecoder

__all__ = ["GriddedDecoder", "StationDecoder"]
