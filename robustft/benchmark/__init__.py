"""The generated spurious-background benchmark (generator and reader)."""
