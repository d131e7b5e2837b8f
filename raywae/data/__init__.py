"""dSprites: factor grid, real and procedural images, the shared packed-bit cache."""

from raywae.data.dsprites import (
    ChecksumError,
    DataError,
    DSprites,
    ProceduralDataWarning,
    data_dir,
    load_dsprites,
)
from raywae.data.grid import FactorGrid

__all__ = [
    "ChecksumError",
    "DSprites",
    "DataError",
    "FactorGrid",
    "ProceduralDataWarning",
    "data_dir",
    "load_dsprites",
]
