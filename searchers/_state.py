"""Search-algorithm state saved inside Tune's experiment state, so the two never disagree.

Tune saves an experiment as several files of one session: ``experiment_state-S.json``
(the trial list) and the search algorithm's own (``search_gen_state-S.json``,
``searcher-state-S.pkl``, ``basic-variant-state-S.json``), then uploads them to storage
one by one. A driver killed between two uploads leaves a searcher that has handed out
trials the stored trial list never held: on ``--resume`` Tune counts them as created (a
configured trial is lost) and a concurrency limit waits on them forever (the run hangs).

The search algorithms the pipeline builds (:func:`searchers.build`) also copy their files
into the experiment state file each time Tune saves it, so a trial list and the searcher
state that made it are one object of the storage, written whole or not at all. On
restore the searcher is loaded from that copy in the experiment state Tune resumed from.
The files are still written beside it, so ``searcher.restore_from`` and Tune's own
tools read them as before.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ray.tune.search import BasicVariantGenerator, SearchGenerator

KEY = "pipeline_search_alg"  # the copy's key in experiment_state-S.json
STATE_GLOB = "experiment_state-*.json"
_STARTED = time.time()  # files older than this process were not downloaded by it


def _resumed_state(dirpath: str) -> dict[str, Any] | None:
    """The experiment state Tune resumed from, as it lies in ``dirpath``.

    Tune reads the newest state in storage, then downloads every state file into its
    local staging folder (``dirpath``). That folder may still hold a newer file a killed
    driver wrote but never uploaded; files this process downloaded are younger than it,
    so those win (for a folder nobody downloaded, e.g. ``searcher.restore_from``, the
    newest file of all).
    """
    files = sorted(Path(dirpath).glob(STATE_GLOB))
    fresh = [p for p in files if p.stat().st_mtime >= _STARTED]
    for path in reversed(fresh or files):
        return json.loads(path.read_text())
    return None


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (Tune's own ``tmp-`` prefix for the part file)."""
    part = path.with_name(f"tmp-{path.name}")
    part.write_bytes(data)
    os.replace(part, path)


class _InExperimentState:
    """Mixin for Tune's search algorithms (``save_to_dir``/``restore_from_dir``)."""

    def save_to_dir(self, dirpath: str, session_str: str) -> Any:
        # written elsewhere first: an upload of ``dirpath`` may be under way meanwhile
        with tempfile.TemporaryDirectory(prefix="search-state-") as tmp:
            result = super().save_to_dir(tmp, session_str=session_str)  # type: ignore[misc]
            files = {p.name: p.read_bytes() for p in Path(tmp).iterdir()
                     if p.is_file() and not p.name.startswith("tmp-")}
        for name, data in files.items():
            _replace(Path(dirpath, name), data)
        state_path = Path(dirpath, STATE_GLOB.replace("*", session_str))
        if state_path.exists():  # Tune writes it just before the searcher's files
            state = json.loads(state_path.read_text())
            state[KEY] = {name: base64.b64encode(data).decode("ascii") for name, data in files.items()}
            _replace(state_path, json.dumps(state).encode())
        return result

    def has_checkpoint(self, dirpath: str) -> bool:
        state = _resumed_state(dirpath)
        if state is not None and KEY in state:
            return bool(state[KEY])
        return super().has_checkpoint(dirpath)  # type: ignore[misc]

    def restore_from_dir(self, dirpath: str) -> None:
        state = _resumed_state(dirpath)
        if state is None or KEY not in state:  # saved before the copy existed
            return super().restore_from_dir(dirpath)  # type: ignore[misc]
        with tempfile.TemporaryDirectory(prefix="search-state-") as tmp:
            for name, data in state[KEY].items():
                Path(tmp, name).write_bytes(base64.b64decode(data))
            super().restore_from_dir(tmp)  # type: ignore[misc]


# (Tune's base classes disagree on save_to_dir's signature; these take what Tune passes)
class StatefulSearchGenerator(_InExperimentState, SearchGenerator):  # type: ignore[misc]
    """Tune's :class:`SearchGenerator` (around a ``Searcher``), its state kept with the trial list."""


class StatefulVariantGenerator(_InExperimentState, BasicVariantGenerator):  # type: ignore[misc]
    """Tune's :class:`BasicVariantGenerator` (random, grid, manual), state kept with the trial list."""
