"""COCO image-text retrieval: the plugin (``plugin.py``), the readers of COCO's caption
files (``captions.py``) and the cards (``cards/``)."""
