"""AnyNet design spaces, the architecture record, seeded sampling under complexity
constraints and analytic complexity; ``anynet.model`` (torch) builds the networks."""

from anynet.arch import Architecture
from anynet.complexity import Complexity, complexity
from anynet.sampler import Sample, sample
from anynet.spaces import SPACE_NAMES, get_space

__all__ = [
    "SPACE_NAMES",
    "Architecture",
    "Complexity",
    "Sample",
    "complexity",
    "get_space",
    "sample",
]
