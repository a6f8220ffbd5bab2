"""HyperOpt TPE over a nested ``hp.choice`` space, returning flat configs."""

from __future__ import annotations

from searchers._space import HyperoptSpace
from searchers.registry import SEARCHERS, keyword_problems


def _hyperopt(spec, space):
    from ray.tune.search.hyperopt import HyperOptSearch

    translated = HyperoptSpace(space)

    class FlatHyperOptSearch(HyperOptSearch):
        """Flattens nested samples so trials and results see ``{name: value}``."""

        def suggest(self, trial_id):
            config = super().suggest(trial_id)
            return translated.flatten(config) if isinstance(config, dict) else config

    objective = spec.objective
    return FlatHyperOptSearch(
        space=translated.build(),
        metric=objective.metric,
        mode=objective.mode,
        # as HyperOpt's labels hold them: a stepped number as its step count (given the value
        # itself, HyperOpt took units=20 of 12..36 step 8 as k=20, i.e. 172, clipped to 36)
        points_to_evaluate=[translated.labels(p) for p in spec.searcher.points_to_evaluate] or None,
        random_state_seed=spec.seed,
        **spec.searcher.options,
    ), {}


def _hyperopt_options(options):
    from ray.tune.search.hyperopt import HyperOptSearch

    return keyword_problems(HyperOptSearch, options, set_here=(
        "space", "metric", "mode", "points_to_evaluate", "random_state_seed"))


SEARCHERS.add("hyperopt", _hyperopt, "Bayesian: HyperOpt TPE over nested choices",
              check_options=_hyperopt_options)
