"""A KerasTuner project (``directory/project_name``) as this door keeps it: a Tune experiment
with the pipeline's spec beside it, reloaded, resumed or overwritten as KerasTuner would."""

from __future__ import annotations

import shutil

from pipeline.results import Results
from pipeline.storage import SPEC_FILE, Location

_TERMINAL = {"TERMINATED", "ERROR"}
# searchers that one tuner may store under either name: GridSearch cut short by max_trials
# runs "manual"; BayesianOptimization runs "tpe" where PyTorch is missing
_FAMILY = {"manual": "grid", "tpe": "gp"}


def _fs(where: Location):
    import pyarrow.fs as pafs

    return where.fs or pafs.LocalFileSystem()


def is_ours(where: Location) -> bool:
    """Whether the project folder holds a pipeline experiment (its spec)."""
    import pyarrow.fs as pafs

    return _fs(where).get_file_info(f"{where.path}/{SPEC_FILE}").type == pafs.FileType.File


def delete(where: Location) -> None:
    """``overwrite=True``: remove the project, when it is one of ours or KerasTuner's."""
    import pyarrow.fs as pafs

    fs = _fs(where)
    names = {e.base_name for e in fs.get_file_info(pafs.FileSelector(where.path))}
    if names and not (SPEC_FILE in names or "oracle.json" in names):
        raise FileExistsError(f"refusing to overwrite {where.path}: it is neither a pipeline "
                              "experiment nor a KerasTuner project")
    if where.fs is None:
        shutil.rmtree(where.path)
    else:
        fs.delete_dir(where.path)


def open_existing(where: Location, tuner_name: str, searcher: str, planned: str,
                  scheduler: str) -> Results:
    """The stored results of a project that the tuner reloads (``overwrite=False``); an error
    when the folder is no pipeline experiment, or was searched by another algorithm than the
    tuner's (``searcher``, or ``planned``: the one it runs for this space, e.g. "manual")."""
    if not is_ours(where):
        raise FileExistsError(f"{where.path} exists but holds no pipeline experiment "
                              "(a KerasTuner project?); pass overwrite=True or another project_name")
    results = Results(where)
    stored = results.spec
    was = (_FAMILY.get(stored.searcher.name, stored.searcher.name), stored.scheduler.name)
    if was not in {(_FAMILY.get(n, n), scheduler) for n in (searcher, planned)}:
        # KerasTuner cannot reload another tuner's oracle either
        raise RuntimeError(
            f"Error reloading the existing project {where.path}: it was searched with "
            f"searcher {stored.searcher.name!r} and scheduler {stored.scheduler.name!r}, this "
            f"{tuner_name} uses {searcher!r} and {scheduler!r}. Change the "
            "`project_name` or pass `overwrite=True` to start it again")
    return results


def finished(results: Results | None) -> bool:
    """Whether every planned trial of the project has ended."""
    if results is None:
        return False
    try:
        df = results.dataframe()
        total = results.spec.num_trials
    except Exception:  # noqa: BLE001 - no experiment state yet: not finished
        return False
    return len(df) >= total and bool(df["status"].isin(_TERMINAL).all())
