"""Model engines, Ray Data actors and audio/image post-processing."""
