"""The analyst console: a review queue in the browser served by the worker (docs/console.md)."""
