"""Modelyard's benchmark harness (issue 9): `python -m tests.bench [--smoke] [--soak]`.

See tests/bench/README.md for the method. Nothing here runs at import time.
"""
