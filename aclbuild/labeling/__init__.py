"""Labelers: synthetic (from a transition matrix) and LLaVA-NeXT, run by :mod:`aclbuild.labeling.runner`."""
