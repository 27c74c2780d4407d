"""TAP-C zero-shot VQA on VQA v2: the plugin (``plugin.py``), the readers of VQA v2
(``vqav2.py``), the question-to-statement rules (``vqa_statements.py``), the official VQA
accuracy (``vqa_accuracy.py``) and the card (``cards/``)."""
