"""Decoders from the latent grid to gridded fields and to station points."""

from __future__ import annotations

from obscast.decoders.gridded import GriddedDecoder
from obscast.decoders.station import StationDecoder

__all__ = ["GriddedDecoder", "StationDecoder"]
