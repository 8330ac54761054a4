"""What a stage function holds per process (`StageContext`): built once at start, closed on shutdown.

Shared by the four scan stages (eco2.stages) and chat (eco2.functions.chat): the job store, the rule book, the character
catalog, the model client built once. How their work is written to the job is eco2.stage_work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from eco2.adapter import EventFunction
from eco2.cachesync.handler import CatalogCache
from eco2.capacity import WaitAnnouncer, model_budget
from eco2.events import source_of
from eco2.jobs import JobStore
from eco2.model import CLASSIFY_SYSTEM_PROMPT, ModelClient
from eco2.observability import FunctionMetrics
from eco2.rules import MAJOR_CATEGORIES, SITUATION_TAGS, CharacterCatalog, RuleBook
from eco2.settings import Settings
from eco2.ssrf import check_image_url, image_allowlist, origin_of
from eco2.storage import Storage

if TYPE_CHECKING:
    from eco2.cachesync.replica import CacheSync
    from eco2.image_fetch import ImageFetcher

# The longest a stage waits for an image it fetches itself (within its own stage timeout).
IMAGE_FETCH_SECONDS = 10.0


@dataclass(slots=True)
class StageContext:
    """Per-process resources of a stage function: built once at start, closed on shutdown."""

    settings: Settings
    store: JobStore
    rules: RuleBook
    catalog: CatalogCache  # the package's catalog, or the newer one a catalog sync delivered
    classify_prompt: str
    # Origins whose image URLs may point into this network, as at the gateway (ECO2_IMAGE_URL_ALLOWLIST, the
    # development stand-in, the photo store); any other URL must point to a public host.
    image_allowlist: frozenset[str]
    metrics: FunctionMetrics | None = None  # the serving function's: model calls are timed into it
    _model: ModelClient | None = None
    _catalog_sync: CacheSync | None = None
    _storage: Storage | None = None
    _images: ImageFetcher | None = None

    @classmethod
    async def create(cls, settings: Settings, metrics: FunctionMetrics | None = None) -> StageContext:
        rules = RuleBook.load()
        return cls(
            settings=settings,
            metrics=metrics,
            store=JobStore.from_url(
                settings.redis_url,
                ttl_seconds=settings.job_ttl_seconds,
                store_grace_seconds=settings.store_grace_seconds,
                connections=settings.connections,
            ),
            rules=rules,
            catalog=CatalogCache(),
            classify_prompt=CLASSIFY_SYSTEM_PROMPT.format(
                majors=", ".join(MAJOR_CATEGORIES),
                middles=", ".join(rules.middle_categories()),
                tags=", ".join(SITUATION_TAGS),
            ),
            image_allowlist=image_allowlist(settings.image_url_allowlist, settings.environment, settings),
        )

    @property
    def characters(self) -> CharacterCatalog:  # the current catalog, in process: no Redis read per event
        return self.catalog.current

    def sync_catalog(self) -> None:
        """Keep `catalog` current from the catalog exchange (reward): warm-up from Redis, then every update."""
        # Imported here: only reward keeps a catalog current, so only it loads the AMQP client (aio-pika).
        from eco2.cachesync.process import CATALOG, start_sync

        self._catalog_sync = start_sync(
            os.environ, self.settings.redis_cache_url, CATALOG, name=f"{self.settings.function_name}-{os.getpid()}"
        )
        self.catalog = self._catalog_sync.caches.catalog

    @property
    def model(self) -> ModelClient:
        # Built once, at start by the steps that use it (vision, answer): the others never load the openai SDK.
        if self._model is None:
            self._model = ModelClient(
                base_url=self.settings.openai_base_url,
                api_key=self.settings.openai_api_key,
                timeout_seconds=self.settings.stage_timeout_seconds,
                observe=None if self.metrics is None else self.metrics.model_call,
                budget=model_budget(self.store.redis, self.settings.capacity, self.metrics),
                announcer=WaitAnnouncer(self.store.redis),
            )
        return self._model

    async def readable_image(self, url: str, user_id: str) -> str:
        """The URL the model reads the image from. The gateway's rules hold here too, since an event need not have
        come through the gateway: an upload to the photo store only in its canonical form and only the user's own
        (then a presigned GET); an allowlisted origin's URL as it is; any other URL only on a public host, and then
        fetched by the stage itself (eco2.image_fetch: the model, self-hosted in this network, would resolve the
        name again) and handed on as a data URL. A 4xx otherwise: the event is poison."""
        if self.settings.storage is not None:
            if self._storage is None:
                self._storage = Storage(self.settings.storage)
            owned = self._storage.owned_url(url, user_id)
            if self._storage.key_of(owned) is not None:
                return self._storage.readable_url(owned)
        if origin_of(url) in self.image_allowlist:
            await check_image_url(url, allowlist=self.image_allowlist)  # its form (an allowlisted origin: no DNS)
            return url
        # Any other URL: fetched here, pinned to the addresses its check approved, and handed on as bytes.
        return await self.image_fetcher.data_url(url)

    @property
    def image_fetcher(self) -> ImageFetcher:
        if self._images is None:
            # Imported at the first such URL: rules and reward never fetch an image, nor load httpx for it.
            from eco2.image_fetch import ImageFetcher

            allowlist = self.image_allowlist
            self._images = ImageFetcher(
                lambda url: check_image_url(url, allowlist=allowlist),
                timeout_seconds=min(IMAGE_FETCH_SECONDS, self.settings.stage_timeout_seconds),
            )
        return self._images

    async def aclose(self) -> None:
        if self._catalog_sync is not None:
            await self._catalog_sync.stop()
        if self._model is not None:
            await self._model.aclose()
        if self._images is not None:
            await self._images.aclose()
        await self.store.aclose()

    @property
    def source(self) -> str:
        return source_of(self.settings.function_name)

    async def ready(self) -> bool:
        return (self._catalog_sync is None or self._catalog_sync.warmed.is_set()) and await self.store.ping()


class ModelFunction(EventFunction[StageContext]):
    """A function that calls the model (vision, answer, chat), served on uvloop + httptools (eco2.serving): it
    holds the openai SDK's ~21 MB anyway, and the two add ~1 MB for a fifth less CPU per event (measured:
    docs/benchmarks.md, "A stage's own cost"). The other stages keep asyncio + h11 for their idle memory."""

    fast_http: ClassVar[bool] = True
