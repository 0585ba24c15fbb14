"""Built-in adapters: importing this module registers them (heavy SDKs load lazily)."""
from unibench.adapters import replay  # noqa: F401
