"""Every Kafka client riskstream creates, in one place.

* ``clients``: the consumer factory (``consumer``, ``reader``) built from
  ``KafkaSettings.confluent_config()`` or a plain librdkafka dict;
* ``publisher``: the one producer, with per-batch delivery tracking;
* ``consume``: reading what a consumer has ready without waiting for a full batch;
* ``admin``: creating topics.

The worker's Faust consumer is configured in ``streams.faust_settings``; everything
else (``produce``, the console feed, the demo, the load tests, the benchmarks, the
test helpers) uses these.
"""
