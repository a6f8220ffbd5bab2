"""Stored results as the front doors read them (also after Ray has shut down)."""

from __future__ import annotations

import pyarrow.fs as pafs

from pipeline.results import Results


class CompatResults(Results):
    """:class:`Results` whose failed trials' errors are read without a running Ray.

    Ray's ``Trial.error_file`` needs an initialized Ray; the front doors read
    results after their own Ray session ended, so the error file is read from
    the trial's folder in the experiment storage instead.
    """

    def _error(self, trial) -> str | None:
        try:
            return super()._error(trial)
        except AssertionError:
            pass
        text = "error"
        name = getattr(trial.run_metadata, "error_filename", None)
        if name:
            fs = self.where.fs or pafs.LocalFileSystem()
            try:
                with fs.open_input_stream(f"{trial.path}/{name}") as f:
                    text = f.read().decode(errors="replace")
            except (OSError, AttributeError):
                text = "error (details not readable here)"
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else "error"
