"""Word similarity (RG65, SimLex-999, WordSim353): the plugin (``plugin.py``) and the cards
(``cards/``)."""
