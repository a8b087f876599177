"""The RKCNN model family (ERKNet/IRKNet, RKCNN-E/I/R) and the baselines, by name.

    >>> from rksearch.models import build, parse
    >>> spec = parse("IRKNet-5x1 5x1 5x1-AB", k=150, dataset="cifar10")
    >>> model = build(spec)
"""

from rksearch.models import baselines as _baselines  # noqa: F401  (registers the baseline families)
from rksearch.models.naming import is_rkcnn_name, parse
from rksearch.models.registry import build, families, find_family, register_family
from rksearch.models.rkcnn import RKCNN
from rksearch.models.spec import ArchSpec, SpecError


@register_family("RKCNN", is_rkcnn_name, "ERKNet-6x1 6x1 6x1")
def _build_rkcnn(name: str, memory_efficient: bool = False, **knobs) -> RKCNN:
    return RKCNN(parse(name, **knobs), memory_efficient=memory_efficient)


__all__ = ["ArchSpec", "RKCNN", "SpecError", "build", "families", "find_family", "parse", "register_family"]
