"""clip-benchmark's WebDataset folders as tasks: the plugin (``plugin.py``) and the reader of
the folders (``webdataset_source.py``)."""
