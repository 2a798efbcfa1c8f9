"""Sharing generators on the Hugging Face hub, through huggingface_hub's `PyTorchModelHubMixin` (the `hub` extra:
`pip install 'vitgan[hub]'`).

The folder the mixin uploads is the one `vitgan export` writes (config.json with the Config under `cfg`, the
argument of `Generator.__init__`; model.safetensors; the model card; the sample grid).
"""

from __future__ import annotations

from pathlib import Path

from vitgan.networks import Generator
from vitgan.training.checkpoint import CheckpointError

try:
    from huggingface_hub import PyTorchModelHubMixin, snapshot_download
except ImportError:  # the message says how to get it
    raise ImportError("the Hugging Face hub needs huggingface_hub: pip install 'vitgan[hub]'") from None


class HubGenerator(Generator, PyTorchModelHubMixin, library_name="vitgan",
                   tags=["gan", "vitgan", "unconditional-image-generation"]):
    """A Generator with the mixin's `save_pretrained` and `push_to_hub`, which write the export format."""

    export_info: dict = {}
    push_to_hub = PyTorchModelHubMixin.push_to_hub  # not Generator.push_to_hub, which comes here

    @classmethod
    def of(cls, generator: Generator) -> HubGenerator:
        """A copy of `generator` (its weights and export_info) with the mixin."""
        hub = cls(generator.cfg)
        hub.load_state_dict(generator.state_dict())
        hub.export_info = dict(getattr(generator, "export_info", {}))
        return hub.eval()

    def _save_pretrained(self, save_directory: Path) -> None:
        from vitgan.export import save_pretrained

        save_pretrained(self, save_directory, {k: v for k, v in self.export_info.items() if k != "format"})


def download(repo_id: str, *, revision: str | None = None, token: str | None = None) -> Path:
    """The local folder of a hub repository's config.json and model.safetensors (from the hub cache when there)."""
    from vitgan.export import CONFIG_NAME, WEIGHTS_NAME

    try:
        return Path(snapshot_download(repo_id, revision=revision, token=token,
                                      allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except Exception as error:  # noqa: BLE001 - no network, no such repository, a bad id: one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{repo_id}: not an exported folder here, and not downloadable from the Hugging Face "
                              f"hub ({first})") from None
