"""The RKCNN model family (ERKNet/IRKNet, RKCNN-E/I/R) and the baselines, by name.

    >>> from rksearch.models import build, parse
    >>> spec = parse("IRKNet-5x1 5x1 5x1-AB", k=150, dataset="cifar10")
    >>> model = build(spec)

Each family registers itself when its module is imported (`rkcnn`, `baselines`); see
`registry` for the protocol every family follows, and docs/models.md for the family itself.
"""

from rksearch.models import baselines
from rksearch.models.knobs import SpecError
from rksearch.models.naming import parse
from rksearch.models.registry import (
    Family,
    ModelSpec,
    build,
    families,
    family_of,
    find_family,
    model_spec,
    register_family,
)
from rksearch.models.rkcnn import RKCNN
from rksearch.models.spec import ArchSpec

__all__ = ["ArchSpec", "Family", "ModelSpec", "RKCNN", "SpecError", "baselines", "build", "families", "family_of",
           "find_family", "model_spec", "parse", "register_family"]
