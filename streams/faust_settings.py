"""Faust's settings, derived from ours: Faust is never configured separately."""

from __future__ import annotations

from typing import Any

import faust

from streams.settings import Settings


def faust_settings(s: Settings) -> dict[str, Any]:
    """Faust's settings derived from ours (never configured separately)."""
    k = s.kafka
    conf: dict[str, Any] = {
        "broker": [f"kafka://{h.strip()}" for h in k.bootstrap_servers.split(",")],
        "value_serializer": "raw",
        "key_serializer": "raw",
        "autodiscover": False,
        "store": "memory://",
        "topic_partitions": s.topics.partitions,
        "topic_allow_declare": False,  # topics are created up front (streams.startup)
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": k.session_timeout_ms / 1000,
        "broker_heartbeat_interval": k.heartbeat_interval_ms / 1000,
        "broker_rebalance_timeout": max(5.0, k.session_timeout_ms / 1000 * 2),
        "broker_commit_every": 1000,
        "broker_commit_interval": 0.5,
        "web_enabled": s.http.port != 0,
        "web_port": s.http.port or 6066,
        "web_bind": s.http.host,
        "web_host": s.http.host,
        "datadir": str(s.data_dir / "faust"),
        "logging_config": None,
        "stream_buffer_maxsize": k.stream_buffer,
    }
    if k.security_protocol != "PLAINTEXT":
        import ssl

        context = None
        if k.security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
            if k.ssl_certfile:
                context.load_cert_chain(str(k.ssl_certfile), str(k.ssl_keyfile or ""))
        if k.sasl_mechanism:
            password = k.sasl_password.get_secret_value() if k.sasl_password else ""
            conf["broker_credentials"] = faust.SASLCredentials(
                username=k.sasl_username or "",
                password=password,
                mechanism=k.sasl_mechanism,
                ssl_context=context,
            )
        elif context is not None:
            conf["broker_credentials"] = faust.SSLCredentials(context)
    return conf
