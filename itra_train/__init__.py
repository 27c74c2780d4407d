"""itra-train: the trainer that produces checkpoints itra-bench evaluates.

It builds image and text towers, projection heads and the loss from the same plugins that
evaluation uses, runs under ``torchrun`` with DDP, and writes checkpoints that
``itra-bench run --model CKPT`` loads with no other flag.
"""
