"""skyctl benchmarks: ``python benchmarks/run.py`` (see its ``--help``)."""
