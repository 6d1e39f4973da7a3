"""The local model store: where weights live, what they are, and where they came from."""

from llmkit.store.store import ModelManifest, ModelStore

__all__ = ["ModelManifest", "ModelStore"]
