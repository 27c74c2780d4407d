"""MS MARCO passage ranking: the plugin (``plugin.py``), the readers of its files
(``readers.py``), the on-disk passage store (``passage_store.py``), search and ranking metrics
(``ranking.py``) and the card (``cards/``)."""
