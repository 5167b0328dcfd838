"""Per-card state in Redis: the 30-day sequences and the Lua-script layer with its retries.

Everything here talks to Redis (one script call per batch, idempotent on transaction
id); the thresholds' statistics use the same script layer (``scoring.thresholds``).
"""
