"""ELEVATER's image-classification benchmark: dataset cards, readers of its on-disk formats,
its exact metrics, linear-probe and fine-tune protocols, and EvalAI submission files.

Mounted as ``itra_bench.vision_benchmark`` (so it never clashes with ELEVATER's own
``vision_benchmark`` package).
"""
