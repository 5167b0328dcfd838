"""The one typed, frozen settings tree, read from ``RISKSTREAM_*`` env vars and CLI flags.

Everything configurable lives here so there is one place to read and one place to mask
secrets. Nested groups use ``__`` in env names, e.g. ``RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS``.
Faust's and confluent-kafka's own settings are *derived* from these, never set separately.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scoring.state.entity_config import EntityStoreConfig
from scoring.state.sequence_config import SequenceStoreConfig
from scoring.thresholds import ThresholdConfig

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(BaseModel):
    """Where the broker is and how to authenticate to it."""

    model_config = _FROZEN

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when security_protocol uses SASL."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (masked in output).")
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the broker's TLS cert.")
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Client key for mutual TLS.")
    session_timeout_ms: int = Field(
        10_000, ge=1000, description="Consumer group session timeout; embedded mode uses 2000."
    )
    heartbeat_interval_ms: int = Field(3000, ge=100, description="Consumer heartbeat interval.")
    linger_ms: int = Field(
        2, ge=0, description="Producer batching delay of the worker's and produce's producers."
    )
    message_timeout_ms: int = Field(
        30_000,
        ge=100,
        description="How long the producer tries to deliver a message before reporting it "
        "failed (librdkafka message.timeout.ms); a batch waits this long for its reports.",
    )
    startup_timeout_s: float = Field(
        120.0, gt=0, description="How long a starting worker waits for the broker (exit 70)."
    )
    publish_retries: int = Field(
        3, ge=0, description="Times a batch produces its failed messages again before it fails."
    )
    publish_retry_backoff_s: float = Field(
        0.5, gt=0, description="First wait before producing failed messages again; doubles."
    )
    fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        le=5000,
        description="Longest a fetch may wait for data. Faust hard-codes 1500 ms, which on the "
        "embedded broker showed up in p99 latency (docs/BENCHMARKS.md), so it is configurable.",
    )
    stream_buffer: int = Field(
        16384,
        ge=256,
        le=1_000_000,
        description="Events Faust buffers per topic before it stops fetching. Faust resumes "
        "at 40 percent of it, and a fetch loop with every partition stopped sleeps a whole second; "
        "a cushion smaller than that second of a saturated worker runs dry and the worker idles "
        "(docs/BENCHMARKS.md). Keep it above 2.5x the events/s of one worker.",
    )
    eager_delivery: bool = Field(
        True,
        description="Hand each fetched message to the streams without Faust's four tasks "
        "per message when the hand-over does not block (streams/faust_tuning.py; more events/s "
        "at saturation, docs/BENCHMARKS.md; process-wide). false: Faust's own wait_first.",
    )

    def confluent_config(self) -> dict[str, Any]:
        """librdkafka configuration shared by every confluent-kafka client we create."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            conf["ssl.ca.location"] = str(self.ssl_cafile)
        if self.ssl_certfile:
            conf["ssl.certificate.location"] = str(self.ssl_certfile)
        if self.ssl_keyfile:
            conf["ssl.key.location"] = str(self.ssl_keyfile)
        return conf


class RedisSettings(BaseModel):
    """Where Redis is; the URL may carry a password, so it is a secret."""

    model_config = _FROZEN

    url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="redis:// or rediss:// (TLS) URL; may include user:password.",
    )
    password: SecretStr | None = Field(None, description="AUTH password if not in the URL.")
    ssl_ca_certs: Path | None = Field(None, description="CA bundle for rediss:// URLs.")
    cluster: bool = Field(
        False,
        description="The URL is a Redis Cluster seed node: a cluster client, script calls "
        "grouped per slot (implies sequence.cluster_mode).",
    )
    retry_attempts: int = Field(5, ge=0, description="Retries before a Redis error is fatal.")
    retry_backoff_s: float = Field(0.2, gt=0, description="First backoff; doubles per retry.")


class TopicSettings(BaseModel):
    """Topic names (DESIGN §2 defaults) and how to create them."""

    model_config = _FROZEN

    transactions: str = Field("transactions", description="Input card transactions.")
    scores: str = Field("scores", description="Every decision (audit trail).")
    alerts: str = Field("alerts", description="Decisions at or over the threshold.")
    dlq: str = Field("transactions.dlq", description="Undecodable input with the reason.")
    feedback: str = Field("feedback", description="Analyst labels.")
    partitions: int = Field(4, ge=1, description="Partitions when riskstream creates topics.")
    replication_factor: int = Field(1, ge=1, description="Replication when creating topics.")

    def all(self) -> list[str]:
        """Every topic riskstream reads or writes, for up-front creation."""
        return [self.transactions, self.scores, self.alerts, self.dlq, self.feedback]


class BatchSettings(BaseModel):
    """Micro-batching limits shared by the stream agent and the HTTP batcher."""

    model_config = _FROZEN

    max_batch: int = Field(
        512,
        ge=1,
        le=4096,
        description="Events per batch at most. Batches fill only under a backlog; larger ones "
        "spread each batch's fixed costs over more events, and make each Redis script call "
        "(and so other clients' wait behind it) longer.",
    )
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        description="A stream batch closes this long after its first event arrived (or when "
        "full). 0: an idle worker scores an event at once, and what arrives while it is busy "
        "forms the next batch; more trades latency for worker CPU at moderate rates.",
    )
    idle_linger_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="How long a request (POST /v1/score) waits for company when the model is "
        "idle. 0: dispatched at once; requests arriving while the model is busy are still "
        "batched together.",
    )


class CanaryGuardSettings(BaseModel):
    """Automatic rollback of a canary whose errors or alert rate leave their bounds."""

    model_config = _FROZEN

    enabled: bool = Field(False, description="Roll a misbehaving canary back automatically.")
    max_error_rate: float = Field(
        0.01, ge=0, le=1, description="Share of the canary's events it may fail to score."
    )
    max_alert_ratio: float = Field(
        3.0, gt=1, description="Bound on canary/primary alert rate (and its inverse)."
    )
    min_events: int = Field(
        2000, ge=1, description="Events each role must have decided before the guard judges."
    )


class ModelSettings(BaseModel):
    """Which artifact serves, where, and the embedding cache."""

    model_config = _FROZEN

    path: Path | None = Field(
        None,
        description="Artifact folder; None = the packaged default. The registry's primary, "
        "once one is promoted, takes its place.",
    )
    registry: Path | None = Field(
        None, description="Model registry folder (docs/deploy.md); None = <data_dir>/registry."
    )
    follow_registry: bool = Field(
        True, description="Apply the registry's roles while running (no restart)."
    )
    watch_interval_s: float = Field(
        2.0, gt=0, le=300, description="How often the worker checks the registry's pointer."
    )
    canary_guard: CanaryGuardSettings = Field(default_factory=CanaryGuardSettings)
    shadow_path: Path | None = Field(
        None, description="Optional shadow artifact: scored and recorded, never decides."
    )
    providers: tuple[str, ...] = Field(
        ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        description="ONNX Runtime providers in order of preference (unavailable ones skipped).",
    )
    intra_op_threads: int = Field(
        1,
        ge=0,
        description="ORT threads per session. 1 suits a worker that scales out by processes "
        "(one per core); 0 = ORT decides (every core of the host, whatever the pod's limit).",
    )
    ort_spinning: bool = Field(
        False, description="Let ORT threads busy-wait (only for dedicated many-core scorers)."
    )
    io_binding: Literal["auto", "always", "never"] = Field(
        "auto", description="ORT IO binding; auto = when a GPU provider actually runs."
    )
    cache_capacity: int = Field(
        200_000, ge=0, description="Users in the embedding cache; 0 disables it."
    )
    inline_max_batch: int = Field(
        32,
        ge=0,
        le=4096,
        description="Batches of at most this many events run the model on the event loop "
        "when the model thread is idle: for small batches the hand-off to the thread and "
        "back, and the two threads taking turns at the interpreter lock, cost more than the "
        "thread saves (docs/BENCHMARKS.md). 0: always the model thread.",
    )


class HttpSettings(BaseModel):
    """The worker's HTTP server (scoring API, health, metrics)."""

    model_config = _FROZEN

    host: str = Field("127.0.0.1", description="Bind address; 0.0.0.0 requires a token.")
    port: int = Field(6066, ge=0, le=65535, description="Port; 0 disables the web server.")
    token: SecretStr | None = Field(
        None, description="Bearer token required by /v1/score (and needed to bind publicly)."
    )


class ConsoleSettings(BaseModel):
    """The analyst console at ``/console`` on the worker's HTTP server (docs/console.md)."""

    model_config = _FROZEN

    enabled: bool = Field(False, description="Serve the console (off by default).")
    capacity: int = Field(5000, ge=10, description="Recent alerts kept in memory for the queue.")
    lookback_s: int = Field(
        86_400, ge=0, description="How far back the console reads the topics when it starts."
    )


class TracingSettings(BaseModel):
    """OpenTelemetry tracing (docs/deploy.md, "Tracing"); off by default.

    Which transactions are traced is decided after scoring: those whose bank-sent
    ``traceparent`` is sampled, a ``sample_ratio`` share of the others, and every alert
    when ``always_sample_alerts``. Nothing is recorded for the rest.
    """

    model_config = _FROZEN

    enabled: bool = Field(False, description="Export traces (needs the `tracing` extra).")
    sample_ratio: float = Field(
        0.01, ge=0, le=1, description="Share of transactions without a sampled parent traced."
    )
    always_sample_alerts: bool = Field(True, description="Trace every alerted transaction.")
    otlp_endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces endpoint (collector)."
    )
    export_interval_ms: int = Field(
        2000, ge=10, le=60_000, description="How often finished spans are sent in a batch."
    )
    service_name: str = Field("riskstream-worker", description="The resource's service.name.")


class Settings(BaseSettings):
    """Effective configuration of a riskstream process."""

    model_config = SettingsConfigDict(
        env_prefix="RISKSTREAM_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    sequence: SequenceStoreConfig = Field(default_factory=SequenceStoreConfig)
    entity: EntityStoreConfig = Field(default_factory=EntityStoreConfig)
    model: ModelSettings = Field(default_factory=ModelSettings)
    thresholds: ThresholdConfig = Field(default_factory=ThresholdConfig)
    http: HttpSettings = Field(default_factory=HttpSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    app_id: str = Field(
        "riskstream", min_length=1, description="Faust app id = the Kafka consumer group."
    )
    data_dir: Path = Field(Path("./riskstream-data"), description="Snapshots and local state.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    log_user_ids: Literal["hashed", "plain"] = Field(
        "hashed", description="User ids in log lines: keyed hash (default) or plain."
    )
    log_hash_key: SecretStr | None = Field(
        None, description="Key of the user-id hash in logs; unset = random per process."
    )

    @property
    def registry_dir(self) -> Path:
        """The model registry folder in force."""
        return (
            self.model.registry if self.model.registry is not None else self.data_dir / "registry"
        )

    @property
    def cluster_mode(self) -> bool:
        """Script calls keep their keys in one slot: on a Redis Cluster (``redis.cluster``)
        or when asked for (``sequence.cluster_mode``, e.g. behind a cluster proxy)."""
        return self.redis.cluster or self.sequence.cluster_mode

    @model_validator(mode="after")
    def _public_bind_needs_token(self) -> Settings:
        if self.http.host not in ("127.0.0.1", "localhost", "::1") and self.http.token is None:
            raise ValueError(
                "http.host is not loopback: set RISKSTREAM_HTTP__TOKEN to expose the API"
            )
        if self.console.enabled and self.http.port == 0:
            raise ValueError("console.enabled needs the HTTP server: set http.port")
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def load_settings(**overrides: Any) -> Settings:
    """Read env vars, then apply CLI overrides given as dotted keys (``kafka.bootstrap_servers``).

    Overrides are merged into the nested dicts so one flag never resets its siblings.
    """
    base = Settings().model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = base
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return Settings.model_validate(_unwrap_secrets(base))


def _unwrap_secrets(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _unwrap_secrets(v) for k, v in value.items()}
    return value


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The settings as plain JSON-able data with every secret replaced by ``***``.

    Redis URLs keep scheme/host/port but lose the password, so an operator can still
    see *where* it points.
    """
    data = settings.model_dump(mode="json")
    data["redis"]["url"] = mask_url(settings.redis.url.get_secret_value())
    return data


def mask_url(url: str) -> str:
    """``redis://user:pw@host`` → ``redis://user:***@host``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}"
