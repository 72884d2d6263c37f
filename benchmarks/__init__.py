"""Benchmark suite of llm4seg: forward passes, CT end to end, scaling, LLM layer loading, fine-tuning, GUI.

Run with ``python -m benchmarks`` (``make bench``); see ``docs/performance.md`` for the measured tables.
"""
