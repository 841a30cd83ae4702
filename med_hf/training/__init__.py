"""Training-only code: data streams, masks, RTV structure targets, losses and discriminators.

Nothing here is needed to run a model; `training/train.py` puts it together.
"""
