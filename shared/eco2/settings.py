"""Settings: a frozen dataclass built once at start from a mapping (the environment), never at import."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from eco2.capacity import CapacitySettings
from eco2.connections import ConnectionSettings
from eco2.env import env_float, env_int, environment_of
from eco2.storage import StorageSettings

# The stand-in model server accepts any key; a real endpoint needs OPENAI_API_KEY.
STANDIN_API_KEY = "eco2-standin-no-key"


@dataclass(frozen=True)
class Settings:
    function_name: str
    # Job state: the job hash, its event stream, claims, the outbox, dead letters (one server: the Lua scripts
    # and MULTI blocks write them together).
    redis_url: str = "redis://127.0.0.1:6379/0"
    # The replicated caches' durable copy (revoked tokens, the character catalog); "" means redis_url.
    redis_cache_url: str = ""
    openai_base_url: str = "http://127.0.0.1:8090/v1"
    openai_api_key: str = STANDIN_API_KEY
    vision_model: str = "gpt-4.1-mini"
    answer_model: str = "gpt-4.1-mini"
    # Models a client may ask for by name (the mobile API's optional `model`).
    allowed_models: tuple[str, ...] = ("gpt-4.1-mini", "gpt-4.1", "gpt-4o-mini")
    job_ttl_seconds: int = 24 * 3600
    stage_timeout_seconds: float = 60.0
    # Beyond the stage's budget: how long a computed output's write waits out a stalled Redis.
    store_grace_seconds: float = 15.0
    max_event_bytes: int = 256 * 1024
    log_level: str = "INFO"
    # ECO2_ENV (eco2.env.environment_of), and ECO2_IMAGE_URL_ALLOWLIST: the origins whose image URLs may point into
    # this network, for every function that hands one to the model (eco2.gateway.settings.image_allowlist).
    environment: str = "production"
    image_url_allowlist: str = ""
    # The photo store (eco2.storage): None when no S3_ENDPOINT_URL / ECO2_S3_BUCKET is set.
    storage: StorageSettings | None = None
    # TLS and time limits of every client (eco2.connections); None: read from the process environment.
    connections: ConnectionSettings | None = None
    # The shared model budget (eco2.capacity, ECO2_MODEL_*): off unless a provider limit is set.
    capacity: CapacitySettings = field(default_factory=CapacitySettings)

    def __post_init__(self) -> None:
        if not self.redis_cache_url:
            object.__setattr__(self, "redis_cache_url", self.redis_url)

    @property
    def work_seconds(self) -> float:
        """The longest a delivery's own work may take before its writes' grace: the stage's time budget, and the
        wait for model capacity when the budget is on."""
        return self.stage_timeout_seconds + self.capacity.delivery_wait_seconds

    @classmethod
    def from_env(cls, env: Mapping[str, str], function_name: str) -> Settings:
        allowed = tuple(m.strip() for m in env.get("ECO2_ALLOWED_MODELS", "").split(",") if m.strip())
        vision_model = env.get("ECO2_VISION_MODEL") or cls.vision_model
        answer_model = env.get("ECO2_ANSWER_MODEL") or cls.answer_model
        return cls(
            function_name=function_name,
            redis_url=env.get("REDIS_URL") or cls.redis_url,
            redis_cache_url=env.get("ECO2_REDIS_CACHE_URL") or env.get("REDIS_URL") or cls.redis_url,
            openai_base_url=env.get("OPENAI_BASE_URL") or cls.openai_base_url,
            openai_api_key=env.get("OPENAI_API_KEY") or STANDIN_API_KEY,
            vision_model=vision_model,
            answer_model=answer_model,
            allowed_models=allowed or tuple(dict.fromkeys((vision_model, *cls.allowed_models))),
            job_ttl_seconds=env_int(env, "ECO2_JOB_TTL_SECONDS", cls.job_ttl_seconds, minimum=60),
            stage_timeout_seconds=env_float(env, "ECO2_STAGE_TIMEOUT_SECONDS", cls.stage_timeout_seconds, minimum=1),
            store_grace_seconds=env_float(env, "ECO2_STORE_GRACE_SECONDS", cls.store_grace_seconds, minimum=0),
            max_event_bytes=env_int(env, "ECO2_MAX_EVENT_BYTES", cls.max_event_bytes, minimum=1024),
            log_level=(env.get("LOG_LEVEL") or cls.log_level).upper(),
            environment=environment_of(env),
            image_url_allowlist=env.get("ECO2_IMAGE_URL_ALLOWLIST") or "",
            storage=StorageSettings.from_env(env),
            connections=ConnectionSettings.from_env(env),
            capacity=CapacitySettings.from_env(env),
        )
