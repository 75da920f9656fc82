"""segcheck's suites, shipped in the wheel: ``gates`` (closed-set validity gates), ``anomaly``
(out-of-distribution pixel scoring), ``prompted`` (text-prompted binary models) and ``metrics``
(property tests of metric code, yours included).

Run one from any folder as ``segcheck check gates [pytest options]`` or
``pytest --pyargs segcheck.suites.gates [options]``; in segcheck's repository,
``pytest suites/gates`` points at the same files. Importing this package imports nothing else.
"""

#: the suites, by the name ``segcheck check`` takes
SUITES = ("gates", "anomaly", "prompted", "metrics")
