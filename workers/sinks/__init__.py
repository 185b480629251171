"""Sinks: where vectors go. They know nothing of Kafka: offsets reach them as plain data."""

from workers.sinks.base import Sink, SinkRecord

__all__ = ["Sink", "SinkRecord"]
