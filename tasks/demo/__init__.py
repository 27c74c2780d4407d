"""The ``demo`` suite on scikit-learn's digits: the plugin (``plugin.py``)."""
