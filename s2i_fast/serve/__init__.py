"""s2i_fast.serve."""
