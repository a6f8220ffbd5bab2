"""Ray's variant generator: random sampling, the full grid, and manual points."""

from __future__ import annotations

from typing import Any

from searchers._space import tune_domains
from searchers.registry import SEARCHERS, keyword_problems


def _random(spec, space):
    from searchers._state import StatefulVariantGenerator

    return StatefulVariantGenerator(
        points_to_evaluate=spec.searcher.points_to_evaluate or None,
        random_state=spec.seed,
        max_concurrent=spec.search.max_concurrent or 0,  # 0: Tune's resources decide
        **spec.searcher.options,
    ), tune_domains(space)


def _points(spec, space, points: list[dict[str, Any]]):
    """Evaluate exactly ``points``; a parameter a point leaves out is sampled (or inactive)."""
    from searchers._state import StatefulVariantGenerator

    return StatefulVariantGenerator(
        points_to_evaluate=points, random_state=spec.seed,
        max_concurrent=spec.search.max_concurrent or 0,
    ), tune_domains(space)


def _random_options(options):
    from ray.tune.search import BasicVariantGenerator

    return keyword_problems(BasicVariantGenerator, options,
                            set_here=("points_to_evaluate", "random_state", "max_concurrent"))


SEARCHERS.add(
    "random", _random,
    "Random search (Ray's variant generator, seeded); works with PBT",
    variant_generator=True, check_options=_random_options,
)
SEARCHERS.add(
    "grid", lambda spec, space: _points(spec, space, space.grid()),
    "Every combination of the grid values (conditions respected, no duplicates)",
    variant_generator=True,
)
SEARCHERS.add(
    "manual", lambda spec, space: _points(spec, space, list(spec.searcher.points_to_evaluate)),
    "Exactly the configs in searcher.points_to_evaluate",
    variant_generator=True,
)
