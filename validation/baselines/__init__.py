"""Baselines the AL method is compared with: Adam in PyTorch (:mod:`validation.baselines.adam`)."""
