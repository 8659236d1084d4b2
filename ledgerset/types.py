"""Field types, at the path the specification uses: ``from ledgerset.types import RedisSet``."""

from ledgerset.core.redis_set import RedisSet

__all__ = ["RedisSet"]
