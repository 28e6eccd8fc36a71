"""Readers of the manifests: static site builder, SQL loader, stats (no torch, no Ray)."""
