"""Ray jobs: the generate driver, its config, the manifests and the CLI.

Nothing here imports Ray or torch at module import; ``generate`` does so lazily.
"""
