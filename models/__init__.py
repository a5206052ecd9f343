"""Shared by the API and the workers: settings, specs, the builder, codecs and the Redis store."""
