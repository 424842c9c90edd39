"""``msgcore demo`` end to end: worker processes, real work, the cache, under a minute."""

from __future__ import annotations

import os
import subprocess
import sys
import time


def test_demo_runs_workers_checks_results_and_shows_the_cache() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MSGCORE_")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "msgcore.cli", "demo", "--jobs", "300", "--span", "500"],
        env={**clean, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "primes below 150,000 (from the workers)" in out
    assert "13,848" in out  # the number of primes below 150,000, from the workers and here
    assert "300 of 300" in out  # the second run: every job answered from the cache
    exit_codes = next(line for line in out.splitlines() if "worker exit codes" in line)
    assert "0, 0" in exit_codes  # both workers shut down gracefully
    assert "Traceback" not in done.stderr
    # the demo imports the workers' app without running it: no per-job log lines here
    assert " - msgcore." not in out + done.stderr
    assert elapsed < 60
