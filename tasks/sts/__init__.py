"""Semantic textual similarity (STS12-16, STS-B, SICK-R): the plugin (``plugin.py``) and the
cards (``cards/``)."""
