"""Latent and text-embedding caches with content-hash invalidation."""
