"""`embedworker model export`: the directory it writes is for other tools, so its tokenizer
config must load in transformers 4.x as well as 5.x (and so in sentence-transformers 3–6 and
Infinity). transformers 5 saves `"tokenizer_class": "TokenizersBackend"`, a name 4.x refuses."""

from __future__ import annotations

import json

# Tokenizer class names that transformers 4.4x resolves from tokenizer_config.json without the
# model-specific slow tokenizer's files (a tokenizer.json is enough): the generic fast class and
# the fast classes of the model families we ship. `TokenizersBackend` (5.x) is not one of them.
LOADS_IN_TRANSFORMERS_4 = {"PreTrainedTokenizerFast", "BertTokenizerFast", "XLMRobertaTokenizerFast"}


def test_an_export_of_a_model_saved_by_transformers_5_names_a_tokenizer_class_4x_knows(tmp_path):
    from transformers import AutoTokenizer

    from tests.support.models import make_random_model, packaged_model_dir
    from workers.encoding.model_files import export_model

    source = make_random_model(tmp_path / "saved-by-5", tokenizer_json=packaged_model_dir() / "tokenizer.json")
    saved = json.loads((source / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] not in LOADS_IN_TRANSFORMERS_4  # what the fix is for

    out = export_model(str(source), tmp_path / "export")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] in LOADS_IN_TRANSFORMERS_4
    assert "backend" not in config
    texts = ["query: 금리 인상 전망", "passage: chip exports rose 12% (HBM3E)"]
    assert AutoTokenizer.from_pretrained(str(out))(texts)["input_ids"] == \
        AutoTokenizer.from_pretrained(str(source))(texts)["input_ids"]
    assert json.loads((source / "tokenizer_config.json").read_text()) == saved  # the source is left as it was


def test_an_export_leaves_a_tokenizer_config_that_already_loads_everywhere(tmp_path, tiny_model_dir):
    from workers.encoding.model_files import export_model

    before = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    out = export_model(str(tiny_model_dir), tmp_path / "export")
    assert json.loads((out / "tokenizer_config.json").read_text()) == before
