"""s2i_fast.eval: measuring generated images (metrics) and a small photo classifier for them.

Sits at the top layer with the CLI (docs/architecture.md): it may use data, engine, fileio and
errors; nothing below imports it. Submodules load on use (`s2i_fast.eval.metrics` needs scipy
and scikit-image, `s2i_fast.eval.classifier` needs torch).
"""
