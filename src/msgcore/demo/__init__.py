"""The demo workload behind ``msgcore demo``."""
