"""Canary for the Faust internals riskstream patches or relies on (#18: own the dependency).

``streams/faust_tuning.py`` replaces ``AIOKafkaConsumerThread._create_worker_consumer`` and
wraps the consumer's ``wait_first``; ``streams/batching.py`` uses ``Stream._enable_passive``,
``Stream._processors``, ``Stream.enable_acks`` and ``Stream.wait_for_stopped``; the failure
policy relies on ``Consumer.wait_empty`` waiting for unacked events; the eager delivery reads
``Service._stopped`` / ``_crashed``. A Faust release that renames or reshapes any of them
must fail here, naming it, rather than silently switch the tuning off or break acking.
"""

from __future__ import annotations

import inspect

import pytest
from faust.streams import Stream
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as driver
from mode.services import Service, WaitResults

EXPECTED_PARAMETERS = {
    (driver.AIOKafkaConsumerThread, "_create_worker_consumer"): ["self", "transport"],
    (Service, "wait_first"): ["self", "coros", "timeout"],
    (Stream, "_enable_passive"): ["self", "channel", "declare"],
    (Stream, "add_processor"): ["self", "processor"],
    (Stream, "wait_for_stopped"): ["self", "coros", "timeout"],
    (Stream, "ack"): ["self", "event"],
    (Consumer, "wait_empty"): ["self"],
}


@pytest.mark.parametrize(
    ("owner", "name"), list(EXPECTED_PARAMETERS), ids=lambda x: getattr(x, "__name__", str(x))
)
def test_patched_faust_internal_keeps_its_signature(owner: type, name: str) -> None:
    fn = getattr(owner, name, None)
    assert fn is not None, f"{owner.__module__}.{owner.__name__}.{name} disappeared"
    original = (
        getattr(owner, "_riskstream_original_create", None) if name.startswith("_create") else None
    )
    params = list(inspect.signature(original or fn).parameters)
    assert params == EXPECTED_PARAMETERS[(owner, name)], (
        f"{owner.__name__}.{name} changed its signature to {params}: review "
        "streams/faust_tuning.py and streams/batching.py"
    )


def test_attributes_the_batching_and_eager_delivery_read_still_exist() -> None:
    assert "_processors" in inspect.getsource(Stream.__init__), "Stream._processors is gone"
    assert "enable_acks" in inspect.getsource(Stream), "Stream.enable_acks is gone"
    assert "_unacked_messages" in inspect.getsource(Consumer.wait_empty)
    assert WaitResults._fields == ("done", "results", "stopped"), "mode's WaitResults changed"
    src = inspect.getsource(Service)
    assert "self._stopped" in src and "self._crashed" in src, "mode.Service state flags moved"
