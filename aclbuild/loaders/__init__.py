"""Readers of every source format; each yields :class:`aclbuild.schema.ClRecord`."""
