"""The folded text padding (train/speed/text_fold.py): the same loss and LoRA gradients as
attending to all 512 rows, on the tiny real-layout DiT, eager and through dynamo."""

from __future__ import annotations

import math

import pytest
import torch

from wanlora.demo import create_demo_project
from wanlora.lora.inject import add_lora, lora_parameters
from wanlora.models.dit import load_dit
from wanlora.models.text_encoder import TEXT_LEN
from wanlora.train.speed.memory_plan import plan_speed
from wanlora.train.speed.text_fold import (
    BIAS_KEYS,
    FOLD_MULTIPLE,
    count_biases,
    fold_bias,
    folded_rows,
    folds_text,
    install_text_fold,
    round_down,
    text_rows,
)
from wanlora.train.step import model_inputs, prediction_loss

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return create_demo_project(tmp_path_factory.mktemp("fold") / "project", epochs=1)


@pytest.fixture
def samples():
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(16, 1, 8, 8, generator=g), torch.randn(n, 64, generator=g))
        for n in (5, 70, 3)
    ]


def lora_model(project, fold: bool, dtype=torch.float32):
    model, _ = load_dit(project.root / project.config.experts["high"].dit, dtype=dtype)
    torch.manual_seed(0)
    add_lora(model, project.config.lora)
    for p in lora_parameters(model):  # LoRA B starts at zero: make every gradient non-trivial
        torch.nn.init.normal_(p, std=0.05)
    if fold:
        install_text_fold(model)
    return model.train()


def loss_and_grads(model, project, samples, batch, dtype=torch.float32):
    config = project.config
    rows = text_rows(model, [samples[i][1].shape[0] for i in batch])
    inputs = model_inputs(
        samples, batch, config, config.experts["high"], torch.Generator().manual_seed(3), CPU, rows
    )
    loss = prediction_loss(model, *inputs, dtype)
    loss.backward()
    grads = [p.grad.detach().clone() for p in lora_parameters(model)]
    return loss.detach(), grads, inputs.context.shape[1]


def test_rows_are_the_caption_plus_bias_keys_rounded_up_and_never_more_than_512():
    assert folded_rows(5) == FOLD_MULTIPLE
    assert folded_rows(FOLD_MULTIPLE - BIAS_KEYS) == FOLD_MULTIPLE
    assert folded_rows(FOLD_MULTIPLE - BIAS_KEYS + 1) == 2 * FOLD_MULTIPLE
    assert folded_rows(120) == 128
    assert folded_rows(460) == TEXT_LEN  # no room to fold: the plain 512 rows
    assert folded_rows(512) == TEXT_LEN


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_count_biases_are_representable_and_sum_to_the_count(dtype):
    for count in (BIAS_KEYS, 7, 129, 392, 509):
        biases = count_biases(count, dtype)
        assert len(biases) == BIAS_KEYS
        assert all(torch.tensor(b, dtype=dtype).item() == b for b in biases)
        total = sum(math.exp(b) for b in biases)
        assert abs(total - count) / count < 1e-5  # one rounded log(count) in bf16: ~1e-2
    assert round_down(5.97, torch.float16) <= 5.97 < round_down(5.97, torch.float16) + 2**-8


def test_the_bias_counts_the_rows_left_out():
    bias = fold_bias(128, torch.float32, CPU)
    assert bias.shape == (1, 1, 1, 128)
    assert torch.count_nonzero(bias[..., : 128 - BIAS_KEYS]) == 0
    weight = bias[0, 0, 0, 128 - BIAS_KEYS :].double().exp().sum().item()
    assert weight == pytest.approx(TEXT_LEN - 128 + BIAS_KEYS, rel=1e-6)


def test_folded_model_gives_the_loss_and_lora_gradients_of_all_512_rows(project, samples):
    plain = lora_model(project, fold=False)
    folded = lora_model(project, fold=True)
    assert folds_text(folded) and not folds_text(plain)
    for batch in ([0], [1], [0, 1, 2]):  # batch: padded to the longest caption's rows
        for p in lora_parameters(plain) + lora_parameters(folded):
            p.grad = None
        loss_a, grads_a, rows_a = loss_and_grads(plain, project, samples, batch)
        loss_b, grads_b, rows_b = loss_and_grads(folded, project, samples, batch)
        longest = max(samples[i][1].shape[0] for i in batch)
        assert rows_a == TEXT_LEN and rows_b == folded_rows(longest) < TEXT_LEN
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=0)
        for ga, gb in zip(grads_a, grads_b, strict=True):
            assert ga.abs().max() > 0  # float32 rounding of sums over 512 rows vs fewer:
            assert (gb - ga).norm() / ga.norm() < 1e-5
            assert (gb - ga).abs().max() < 1e-5 * ga.abs().max()


def test_folded_model_on_512_rows_is_the_plain_attention_bit_for_bit(project, samples):
    """Sampling gives every model 512 rows: the fold must change nothing there."""
    plain = lora_model(project, fold=False)
    folded = lora_model(project, fold=True)
    config = project.config
    inputs = model_inputs(
        samples, [0], config, config.experts["high"], torch.Generator().manual_seed(3), CPU
    )
    with torch.no_grad():
        a = prediction_loss(plain, *inputs, torch.float32)
        b = prediction_loss(folded, *inputs, torch.float32)
    assert torch.equal(a, b)


def test_folded_attention_traces_into_one_graph_under_dynamo(project, samples):
    """The bias is made from Python constants: no graph break inside a compiled block."""
    folded = lora_model(project, fold=True)
    block = folded.blocks[0]
    hidden = torch.randn(1, 16, 256)
    context = torch.zeros(1, 64, 256)
    context[:, :5] = torch.randn(1, 5, 256)
    temb = torch.randn(1, 6, 256)
    rotary = folded.rope(torch.randn(1, 16, 1, 8, 8))
    explained = torch._dynamo.explain(block)(hidden, context, temb, rotary)
    assert explained.graph_break_count == 0, explained.break_reasons


def test_compiled_block_takes_captions_of_several_lengths(project):
    """A run's captions differ in length: dynamo sees several row counts, makes the text
    length dynamic, and the bias must still build inside the graph (seen on the H200: Python
    maths on the symbolic length failed a guard)."""
    torch._dynamo.reset()
    folded = lora_model(project, fold=True)
    block = folded.blocks[0]
    compiled = torch.compile(block, backend="aot_eager")
    hidden, temb = torch.randn(1, 16, 256), torch.randn(1, 6, 256)
    rotary = folded.rope(torch.randn(1, 16, 1, 8, 8))
    for rows in (64, 128, 192, 128):
        context = torch.zeros(1, rows, 256)
        context[:, :5] = torch.randn(1, 5, 256)
        with torch.no_grad():
            expected = block(hidden, context, temb, rotary)
            got = compiled(hidden, context, temb, rotary)
        torch.testing.assert_close(got, expected)
    torch._dynamo.reset()


def test_plan_folds_on_cuda_by_default_and_off_keeps_the_plain_attention(project):
    training = project.config.training
    assert training.text_fold == "auto"
    cuda = dict(free_bytes=80 * 2**30)  # planned for a CUDA card without one
    assert plan_speed(training, torch.device("cuda"), torch.float16, **cuda).text_fold
    assert not plan_speed(training, CPU, torch.float16).text_fold  # auto: CUDA only
    on = training.model_copy(update={"text_fold": "on"})
    assert plan_speed(on, CPU, torch.float16).text_fold
    off = training.model_copy(update={"text_fold": "off"})
    assert not plan_speed(off, torch.device("cuda"), torch.float16, **cuda).text_fold
