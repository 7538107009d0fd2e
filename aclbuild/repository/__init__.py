"""The repository folder format (being split into modules)."""

from aclbuild.repository.writer import *  # noqa: F401,F403
from aclbuild.repository.writer import (  # noqa: F401
    _hash_parts, _record_batch, decode_image, ENCODE_CHUNK, ENCODE_THREADS, SHARD_PATTERN, SPLITS,
)
