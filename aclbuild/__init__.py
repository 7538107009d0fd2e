"""aclbuild: complementary-label image datasets labeled by vision-language models, from labeling to the Hub."""

__version__ = "0.1.0"
