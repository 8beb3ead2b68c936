"""Trainer: losses, loop, checkpoints, DDP (installed as s2i_fast.train)."""
