"""Settings come from env and flags; the CLI fails in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streams.settings import Settings, load_settings, mask_url, masked_dump


def test_env_nested_and_flag_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS", "k1:9092")
    monkeypatch.setenv("RISKSTREAM_BATCH__MAX_BATCH", "64")
    s = load_settings(**{"kafka.bootstrap_servers": "k2:9093"})
    assert s.kafka.bootstrap_servers == "k2:9093"
    assert s.batch.max_batch == 64  # a sibling override does not reset env values


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(Exception, match="frozen"):
        s.log_level = "DEBUG"  # type: ignore[misc]


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKSTREAM_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("RISKSTREAM_REDIS__URL", "rediss://app:s3cret@redis.internal:6380/0")
    dumped = json.dumps(masked_dump(Settings()))
    assert "hunter2" not in dumped and "s3cret" not in dumped
    assert "rediss://app:***@redis.internal:6380/0" in dumped
    assert mask_url("redis://h:1") == "redis://h:1"


def test_confluent_config_passes_sasl_and_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKSTREAM_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RISKSTREAM_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("RISKSTREAM_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("RISKSTREAM_KAFKA__SASL_PASSWORD", "pw")
    monkeypatch.setenv("RISKSTREAM_KAFKA__SSL_CAFILE", "/etc/ca.pem")
    conf = Settings().kafka.confluent_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "pw"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_config_command_prints_masked_json() -> None:
    out = _cli("config", "--redis-url", "redis://:pw@h:1/0")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["redis"]["url"] == "redis://:***@h:1/0"


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["simulate", "--users", "-3", "--out", "x.parquet"], {}, "--users"),
        (["simulate", "--users", "3", "--out", "x.txt"], {}, "unknown extension"),
        (["config"], {"RISKSTREAM_LOG_LEVEL": "loud"}, "log_level"),
        (["nosuch"], {}, "No such command"),
        (["models", "promote", "v9", "--registry", "/nonexistent-reg"], {}, "no version 'v9'"),
        (["models", "shadow", "--registry", "/nonexistent-reg"], {}, "give a VERSION or --off"),
        (["models", "register", "/nonexistent-art"], {}, "not a model artifact"),
        (["models", "rollback", "--registry", "/nonexistent-reg"], {}, "nothing to roll back"),
        (["config"], {"RISKSTREAM_HTTP__HOST": "0.0.0.0"}, "invalid settings: http.host"),
    ],
)
def test_bad_input_is_one_line_no_traceback(
    args: list[str], env: dict[str, str], needle: str
) -> None:
    out = _cli(*args, env=env)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert needle in lines[0]
    assert "Traceback" not in out.stderr


def test_faust_transport_gets_the_same_sasl_and_tls_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Settings → Faust credentials → the kwargs Faust hands to aiokafka (its public helper)."""
    import ssl

    import certifi
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streams.faust_settings import faust_settings

    monkeypatch.setenv("RISKSTREAM_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RISKSTREAM_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("RISKSTREAM_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("RISKSTREAM_KAFKA__SASL_PASSWORD", "pw")
    monkeypatch.setenv("RISKSTREAM_KAFKA__SSL_CAFILE", certifi.where())
    auth = credentials_to_aiokafka_auth(faust_settings(Settings())["broker_credentials"])
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("svc", "pw")
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA file was loaded

    monkeypatch.setenv("RISKSTREAM_KAFKA__SECURITY_PROTOCOL", "SSL")
    monkeypatch.delenv("RISKSTREAM_KAFKA__SASL_MECHANISM")
    tls_only = credentials_to_aiokafka_auth(faust_settings(Settings())["broker_credentials"])
    assert tls_only["security_protocol"] == "SSL" and "sasl_mechanism" not in tls_only

    monkeypatch.setenv("RISKSTREAM_KAFKA__SECURITY_PROTOCOL", "PLAINTEXT")
    assert "broker_credentials" not in faust_settings(Settings())


def test_faust_gets_a_stream_buffer_that_outlasts_its_one_second_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import faust

    from streams.faust_settings import faust_settings

    conf = faust_settings(Settings())
    # Faust resumes fetching at 40 % of the buffer and, with every partition paused, its
    # fetch loop sleeps 1 s: the cushion must hold more than a second of a worker's events
    assert 0.4 * conf["stream_buffer_maxsize"] >= 5000
    app = faust.App("buffer-check", **conf)
    assert app.conf.stream_buffer_maxsize == conf["stream_buffer_maxsize"]
    monkeypatch.setenv("RISKSTREAM_KAFKA__STREAM_BUFFER", "100")
    with pytest.raises(ValueError, match="stream_buffer"):
        Settings()


def test_user_ids_in_logs_are_keyed_hashes_unless_plain_is_asked_for() -> None:
    from streams.log_privacy import user_ref

    hashed = user_ref("alice", "hashed", "k1")
    assert hashed.startswith("u#") and "alice" not in hashed
    assert user_ref("alice", "hashed", "k1") == hashed  # stable: one user's lines correlate
    assert user_ref("alice", "hashed", "k2") != hashed  # not guessable without the key
    assert user_ref("bob", "hashed", "k1") != hashed
    assert user_ref("alice", "hashed") == user_ref("alice", "hashed")  # per-process key
    assert user_ref("alice", "plain") == "alice"
    assert Settings().log_user_ids == "hashed"
