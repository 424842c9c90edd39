"""Small programs the benchmark starts as subprocesses (responder, idle worker)."""
