"""Benchmarks: each measures its floor in the same run and prints the ratio.

Run all with `make bench` (or `python -m bench`), one with `python -m bench.ping` etc.
They start a sandbox node of their own and stop it when done.
"""
