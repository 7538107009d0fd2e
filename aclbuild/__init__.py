"""aclbuild: complementary-label image datasets labeled by vision-language models, from labeling to the Hub."""

__version__ = "0.1.0"

__all__ = ["ClData", "load_cl_dataset"]


def __getattr__(name: str):
    """``aclbuild.load_cl_dataset`` and ``aclbuild.ClData``, imported on first use (torch is slow to import)."""
    if name in ("load_cl_dataset", "ClData"):
        from aclbuild import cl_data

        return getattr(cl_data, name)
    raise AttributeError(f"module 'aclbuild' has no attribute {name!r}")
