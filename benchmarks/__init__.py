"""byteor benchmarks: ``python -m benchmarks.<name>`` scripts, never part of the test run.

Each prints a rich table of ratios against peers measured in the same run and accepts
``--json PATH`` and ``--quick``; shared helpers are in :mod:`benchmarks._common`.
"""
