#!/usr/bin/env python3
"""Set up and run the Celery Ops Dashboard with nothing but Python 3.11+.

    python3 dev.py demo    # set up, then run the dashboard with a demo worker
    python3 dev.py test    # set up, then run the whole test suite
    python3 dev.py bench   # set up, then run the benchmarks (see docs/benchmarks.md)

Set-up makes a virtual environment in .venv and installs requirements.lock
(the runtime, what the Docker image has) and requirements-dev.lock (tests, lint,
the demo's Redis) into it, again only when either lock file changes. Standard
library only.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
LOCKS = (ROOT / "requirements.lock", ROOT / "requirements-dev.lock")
STAMP = VENV / ".requirements.sha256"


def locks_digest() -> str:
    """One digest over both lock files, so that a change to either reinstalls."""
    digest = hashlib.sha256()
    for lock in LOCKS:
        digest.update(lock.name.encode() + b"\0" + lock.read_bytes() + b"\0")
    return digest.hexdigest()


def setup() -> None:
    if not PYTHON.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    digest = locks_digest()
    if not STAMP.exists() or STAMP.read_text().strip() != digest:
        print("installing the lock files into .venv ...", flush=True)
        requirements = [arg for lock in LOCKS for arg in ("-r", str(lock))]
        subprocess.run(
            [
                str(PYTHON),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *requirements,
            ],
            check=True,
        )
        STAMP.write_text(digest)


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    rest = sys.argv[2:]
    if command == "setup":
        setup()
    elif command == "demo":
        setup()
        os.execv(str(PYTHON), [str(PYTHON), "-m", "demo.run", *rest])
    elif command == "test":
        setup()
        os.execv(str(PYTHON), [str(PYTHON), "-m", "pytest", *rest])
    elif command == "bench":
        setup()
        os.execv(str(PYTHON), [str(PYTHON), "-m", "bench", *rest])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
