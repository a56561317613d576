"""benchmarks/coverage.py on a handful of names: each one explained or refused as the
families say, the page generated from the outcomes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _coverage():
    spec = importlib.util.spec_from_file_location("coverage_benchmark", BENCHMARKS / "coverage.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_a_handful_of_names_is_explained_or_refused_with_its_reason(tmp_path):
    coverage = _coverage()
    page = tmp_path / "families.md"
    outcomes = coverage.main(["--names", "vit_tiny_patch16_224", "vit_base_patch16_siglip_224",
                              "vit_base_patch16_gap_224", "eva02_tiny_patch14_224",
                              "xcit_nano_12_p16_224", "--markdown", str(page)])
    result = {o.name: (o.model_class, o.result, o.detail) for o in outcomes}
    assert result["vit_tiny_patch16_224"] == ("VisionTransformer", "explained", "fused")
    assert result["vit_base_patch16_siglip_224"] == ("VisionTransformer", "explained", "fused")
    assert result["vit_base_patch16_gap_224"] == ("VisionTransformer", "explained", "fused")
    assert result["eva02_tiny_patch14_224"] == ("Eva", "explained", "eager")
    model_class, verdict, why = result["xcit_nano_12_p16_224"]
    assert (model_class, verdict) == ("Xcit", "refused") and "cross-covariance" in why
    text = page.read_text()
    assert "**4 of 5 names explained.**" in text
    assert "| `VisionTransformer` | 3 | 3 | 0 | 0 | fused 3 |  |" in text
