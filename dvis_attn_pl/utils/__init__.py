"""Utilities: the bottom layer (no import of any other part of the package).

``compat`` (workarounds of other libraries' internals), ``arrays`` (generic NumPy and JSON helpers).
"""
