"""s2i_fast.data."""
