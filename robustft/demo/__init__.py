"""The demo and the comparison of training objectives on the generated benchmarks: the
stand-in model, the measures per split, the before/after report, the comparison's tables,
plots and the marked blocks it rewrites in ``docs/demo.md``."""
