"""Built-in extractor backends. Importing registers them; heavy SDKs load only when used."""
import importlib

for _mod in ("lexicon", "hf", "openai_backend", "vllm_backend"):
    try:
        importlib.import_module(f"unibench.metrics.backends.{_mod}")
    except ModuleNotFoundError as _exc:  # a backend file not written yet, never a missing SDK
        if not (_exc.name or "").startswith("unibench.metrics.backends"):
            raise
