"""Developer tooling, not on the serving path: the embedded stack (a real Kafka broker
and Redis on loopback ports), a worker subprocess for demos, tests and benchmarks, and
the transaction simulator. Nothing a worker imports when it serves lives here.
"""
