"""Wikipedia sections triplets: the plugin (``plugin.py``) and the card (``cards/``)."""
