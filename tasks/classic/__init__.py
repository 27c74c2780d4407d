"""The classic image suites (``zeroshot-classic``, ``linear-classic``): the plugin
(``plugin.py``), the readers of torchvision's on-disk formats and CLIP's class names and
templates (``prompts.json``)."""
