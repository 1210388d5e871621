"""The benchmark harness: `python -m benchmarks [SCENARIO...] [--json FILE] [--repeat N] [--quick]`.

The data flows: cli (options) -> runner (each scenario in each placement) -> a scenario in a
scenarios_*.py module (registered with registry.scenario) -> measure (interleaved, repeated
timings of variants.Variant commands) -> rows.Row -> runner (ratios, goals) -> report.
"""
