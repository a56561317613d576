"""Explanations of images: the inputs (files, folders, splits), the explained classes, the
overlay grids, and the run of ``robustft-explain``."""
