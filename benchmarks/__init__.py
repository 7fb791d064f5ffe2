"""The benchmark harness: the concurrency models on the same workload, measured in fresh processes.

``compare`` runs the models side by side on one workload; ``bench`` runs the scenarios (one module
each in ``scenarios/``, listed in its registry).  Shared parts: ``probe`` (one measurement in a
fresh process), ``harness`` (running probes, the environment, statistics), ``metrics`` (what a
probe's report says), ``units`` (one formatter per unit), ``plots``, and ``bare`` (the bare chains).
"""
