"""Test-wide settings: no network, no wandb account, deterministic CPU threads."""

import os

# timm's pretrained=True would otherwise hang ~46 s on the closed network before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

# real weights and photos (the `real` extra), for every test that asks for them
from fixtures.real import real_photos, real_weights  # noqa: E402, F401
