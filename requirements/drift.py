"""Print how the running environment differs from a lock file.

Used by ``make test-latest`` to show which newer releases the suite is about to
meet (``name: locked -> installed``), and by the tests to check that ``make test``
runs exactly what the lock pins.

Example:
    python requirements/drift.py requirements/dev.txt          # lists differences, exit 0
    python requirements/drift.py requirements/dev.txt --strict  # exit 1 if any pin differs
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def pins(lock: Path) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line of a pip-style lock."""
    found = {}
    for line in lock.read_text().splitlines():
        m = _PIN.match(line)
        if m:
            found[canonicalize_name(m.group(1))] = m.group(2)
    return found


def installed() -> dict[str, str]:
    """``{canonical name: version}`` of the distributions this interpreter sees."""
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def drift(lock: Path) -> list[tuple[str, str, str | None]]:
    """``(name, locked, installed or None)`` for every pin the environment does not match."""
    have = installed()
    return [(name, want, have.get(name)) for name, want in sorted(pins(lock).items())
            if name not in have or Version(have[name]) != Version(want)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--strict", action="store_true", help="exit 1 if the environment differs")
    args = parser.parse_args(argv)
    diffs = drift(args.lock)
    for name, want, have in diffs:
        print(f"{name}: {want} (locked) -> {have or 'not installed'}")
    print(f"{len(diffs)} of {len(pins(args.lock))} pins of {args.lock} differ from this environment")
    return 1 if diffs and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
