from transformers import AutoModelForCausalLM, AutoTokenizer

from autointerp.data.stdlib import stdlib_files


def test_tiny_model_loads_offline(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    ids = tok("def f(x): return x", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == model.config.vocab_size


def test_stdlib_split_is_disjoint_and_nonempty():
    train, val = set(stdlib_files("train")), set(stdlib_files("validation"))
    assert train and val and not train & val
