"""Ray's variant generator: random sampling, the full grid, and manual points."""

from __future__ import annotations

from typing import Any

from searchers._space import tune_domains
from searchers.registry import SEARCHERS


def _random(spec, space):
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(
        points_to_evaluate=spec.searcher.points_to_evaluate or None,
        random_state=spec.seed,
        **spec.searcher.options,
    ), tune_domains(space)


def _points(points: list[dict[str, Any]]):
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(points_to_evaluate=points), {}


SEARCHERS.add(
    "random", _random,
    "Random search (Ray's variant generator, seeded); works with PBT",
    variant_generator=True,
)
SEARCHERS.add(
    "grid", lambda spec, space: _points(space.grid()),
    "Every combination of the grid values (conditions respected, no duplicates)",
    variant_generator=True,
)
SEARCHERS.add(
    "manual", lambda spec, space: _points(list(spec.searcher.points_to_evaluate)),
    "Exactly the configs in searcher.points_to_evaluate",
    variant_generator=True,
)
