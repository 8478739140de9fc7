"""Pieces of the training loop (:func:`mvqkd.train.train`): options, optimiser and schedule,
samplers with exact-resume snapshots, DDP helpers, monitoring, a synthetic KD set for tests."""
