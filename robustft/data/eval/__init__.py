"""Evaluation datasets read from the layouts they ship in: ImageNet val and its shifts
(``imagenet``), ObjectNet, SI-Score, and the registry by name (``registry``).

Nothing is imported here: the registry imports the generated benchmark's reader
(``robustft.synth.read``), which builds on ``robustft.data.eval`` itself.
"""
