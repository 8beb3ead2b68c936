"""s2i-fast: sketch-to-image GAN with Masked Residual Units."""

__version__ = "0.1.0"

__all__ = ["Engine"]


def __getattr__(name: str):
    # lazy: `import s2i_fast` stays light; `from s2i_fast import Engine` loads the engine
    if name == "Engine":
        from s2i_fast.engine import Engine

        return Engine
    raise AttributeError(f"module 's2i_fast' has no attribute {name!r}")
