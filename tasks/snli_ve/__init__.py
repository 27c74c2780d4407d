"""SNLI-VE visual entailment: the plugin (``plugin.py``), the entailment protocols
(``entailment.py``, with the torch-free settings of its transfer classifier in
``entailment_config.py``) and the cards (``cards/``)."""
