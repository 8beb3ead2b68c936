"""Networks: the MRU, conditional batch norm, generator and discriminator."""

from s2i_fast.model.mru import MRU
from s2i_fast.model.networks import Discriminator, Generator, count_parameters
from s2i_fast.model.norm import BatchNorm2d, ConditionalBatchNorm2d

__all__ = [
    "MRU",
    "BatchNorm2d",
    "ConditionalBatchNorm2d",
    "Discriminator",
    "Generator",
    "count_parameters",
]
