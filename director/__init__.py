"""The director: turns a concept into a validated AlbumPlan (offline or with an LLM)."""
