"""What a KerasTuner tuner shows of its search: ``tuner.oracle``, the best hyperparameters and
models, the summaries. A mixin of :class:`pipeline.compat._kt_tuner.Tuner`, reading the
project's stored :class:`~pipeline.results.Results`."""

from __future__ import annotations

from typing import Any

from pipeline.compat._hyperparameters import HyperParameter, HyperParameters
from pipeline.compat._kt_objective import MultiObjective, Objective, _as_objective, _objectives
from pipeline.compat._kt_oracle import Oracle
from pipeline.compat._kt_trial import MULTI_OBJECTIVE, _Job, build_model
from pipeline.results import Results

_KT_NAMES = {"int": "Int", "float": "Float", "choice": "Choice", "bool": "Boolean", "fixed": "Fixed"}


class TunerResults:
    """The results side of a tuner (KerasTuner's ``get_best_*``, ``results_summary``,
    ``search_space_summary``, ``oracle``, ``remaining_trials``)."""

    # the tuner's, set in its __init__
    _results: Results | None
    _oracle: Oracle
    _defs: dict[str, HyperParameter]
    _initial: list[str]
    _declared: HyperParameters | None
    objective: Any
    hypermodel: Any
    compile_kwargs: dict[str, Any]
    max_trials: int | None
    tune_new_entries: bool

    @property
    def project_dir(self) -> str:
        raise NotImplementedError

    def _trials(self) -> int | None:
        raise NotImplementedError

    @property
    def results(self) -> Results:
        """The pipeline :class:`~pipeline.results.Results` of this project."""
        if self._results is None:
            raise RuntimeError("no results yet: call search() first")
        return self._results

    @property
    def oracle(self):
        """KerasTuner's ``tuner.oracle``: the tuner's oracle (the one given, else its class's),
        showing the trials, best trials, objective (a read-only view)."""
        res = self._results
        if res is not None and res.metric != MULTI_OBJECTIVE:
            objective: Any = Objective(res.metric, res.mode)
        else:  # KerasTuner's oracle keeps an Objective (a MultiObjective for a list)
            objective = None if self.objective is None else _as_objective(self.objective, True)
        return self._oracle._attach(res, objective, self.max_trials, self._oracle_space(),
                                    self._hp_of)

    def _oracle_space(self) -> HyperParameters:
        """``oracle.hyperparameters``: as in KerasTuner, the user's ``hyperparameters=`` object
        itself when the search tunes nothing else (``tune_new_entries=False``, or no new
        entry); else the whole space, with the defaults active under the defaults."""
        declared = self._declared
        if declared is not None and (not self.tune_new_entries
                                     or all(n in declared._defs for n in self._defs)):
            return declared
        return HyperParameters.defaults(self._shown_defs().values())

    def _shown_defs(self) -> dict[str, HyperParameter]:
        """The space as KerasTuner shows it: before the search, only what the build with
        defaults (and each conditional scope activated once) declares, as KerasTuner knows
        no more before its first trial; the door's deeper discovery (e.g. the layers of a
        larger ``num_layers``) shows once trials have run."""
        if self._results is not None:
            return self._defs
        return {n: self._defs[n] for n in self._initial if n in self._defs}

    def _best_trials(self, n: int) -> list[str]:
        if self._results is None:
            return []
        return list(self._results.leaderboard(n)["trial_id"])

    def _hp_of(self, trial_id: str) -> HyperParameters:
        space = self.results.spec.search_space()
        config = self.results.configs.get(trial_id, {})
        values = {k: v for k, v in space.active(config).items() if k != "__default__"}
        return HyperParameters.replay(self._defs.values(), values)

    def get_best_hyperparameters(self, num_trials: int = 1) -> list[HyperParameters]:
        """The best trials' hyperparameters, best first."""
        return [self._hp_of(t) for t in self._best_trials(num_trials)]

    def get_best_models(self, num_models: int = 1) -> list:
        """The best trials' models, best first, made as KerasTuner makes them: each built by
        the hypermodel from its trial's hyperparameters (compiled as in the trial), then given
        the weights of the trial's best checkpoint. Custom layers and ``Lambda`` layers need
        no registration. A tuner without a hypermodel (its ``run_trial`` builds the models)
        loads the saved models instead."""
        return [self._load_model(t) for t in self._best_trials(num_models)]

    def _load_model(self, trial_id: str):
        if self.hypermodel is None:
            return self.results.load_model(trial_id)
        from pipeline.checkpoints import load_weights_into

        checkpoint = self.results.checkpoint(trial_id)
        if checkpoint is None:
            raise LookupError(f"trial {trial_id} has no checkpoint")
        job = _Job(self.hypermodel, list(self._defs.values()), [], compile_kwargs=self.compile_kwargs)
        model = build_model(job, self._hp_of(trial_id), self.results.configs.get(trial_id, {}),
                            self.results.spec)
        with checkpoint.as_directory() as folder:
            return load_weights_into(model, folder)

    def search_space_summary(self, extended: bool = False) -> None:
        print("Search space summary")
        shown = self._shown_defs()
        print(f"Default search space size: {len(shown)}")
        for name, d in shown.items():
            print(f"{name} ({_KT_NAMES[str(d.kind)]})")
            print({k: v for k, v in d.get_config().items() if k != "name"})  # as KerasTuner prints it

    def results_summary(self, num_trials: int = 10) -> None:
        """Print the best trials as KerasTuner does."""
        print("Results summary")
        print(f"Results in {self.project_dir}")
        print("Showing %d best trials" % num_trials)
        res = self._results
        if res is None:
            return
        metric, mode = res.metric, res.mode
        if metric == MULTI_OBJECTIVE:
            print(MultiObjective(_objectives(self.objective, True)))
        else:
            print(Objective(metric, mode))
        board = res.leaderboard(num_trials)
        for _, row in board.iterrows():
            print()
            print(f"Trial {row['trial_id']} summary")
            print("Hyperparameters:")
            values = self._hp_of(row["trial_id"]).values
            for name, value in values.items():
                print(f"{name}:", value)
            if not values:
                print("default configuration")
            print(f"Score: {row[metric]}")

    @property
    def remaining_trials(self) -> int | None:
        if self._results is None:
            return self._trials()
        return max(0, self._results.spec.num_trials - self._results.num_trials)
