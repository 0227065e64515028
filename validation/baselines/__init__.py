"""Baselines the AL method is compared with: Adam in PyTorch (:mod:`validation.baselines.adam`), ridge and
LASSO / basis pursuit (:mod:`validation.baselines.linear`), and the optional pyscnn peer
(:mod:`validation.baselines.scnn`, installed by ``make scnn``)."""
