"""``msgcore.cache``: results of deterministic handlers, reused for repeated payloads.

Declare it on the subscriber (``cache=True`` or a ``CachePolicy``); ``Client.submit``
and ``Client.request`` then answer a repeated payload from the store without
publishing, a second submit of a payload being computed joins that job
(single-flight), and a worker acknowledges a message whose result was cached after it
was queued without running the handler. Failures are never cached.
"""

from msgcore.cache.keys import cache_key
from msgcore.cache.policy import CachePolicy, ChannelCache
from msgcore.store.cache import CacheStats

__all__ = ["CachePolicy", "CacheStats", "ChannelCache", "cache_key"]
