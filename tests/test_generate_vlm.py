"""`--labeler vlm` on tiny random chat VLMs of each family: generation end to end, likelihood scoring proved
against a plain teacher-forced computation, and the refusals (no weights, no chat template, no image processor)."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tiny_llava import PrefixPasses
from tiny_vlms import FAMILIES, NEEDS_TORCHVISION, build_tiny_vlm

from aclbuild.labeling.backend import ask

QUERIES = 30


def _has_torchvision() -> bool:
    import importlib

    try:
        importlib.import_module("torchvision")
    except (ImportError, RuntimeError, OSError):  # PyPI's torchvision fails to load its ops beside CPU torch 2.13
        return False
    return True


# .ci/run's torchvision step sets ACLBUILD_REQUIRE_TORCHVISION=1: there a missing torchvision fails instead of skipping
NO_TORCHVISION = pytest.mark.skipif(
    not _has_torchvision() and not os.environ.get("ACLBUILD_REQUIRE_TORCHVISION"),
    reason="its processor's video processor needs torchvision: run in the torchvision CI step (.ci/run)",
)
PARAMS = [pytest.param(f, marks=NO_TORCHVISION) if f in NEEDS_TORCHVISION else f for f in FAMILIES]


@pytest.fixture(scope="module", params=PARAMS)
def tiny_vlm(request, tmp_path_factory) -> Path:
    return build_tiny_vlm(request.param, tmp_path_factory.mktemp(request.param) / "model")


def make_queries(n: int, mode: str = "cl", seed: int = 0) -> list:
    """``n`` queries as the runner makes them: random images, 4 shuffled min10 names (some are 2 words), 2 rounds."""
    from aclbuild.labeling.backend import Query
    from aclbuild.labeling.prompts import load_template
    from aclbuild.registry import get_base

    base, template = get_base("min10"), load_template(mode, None)
    rng = np.random.default_rng(seed)
    queries, images = [], [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(n // 2)]
    for k in range(n):
        names = [base.long_names[c] for c in rng.permutation(base.num_classes)[:4]]
        answers = [str(j + 1) for j in range(4)] if template.numbered else names
        prefix, suffix = template.split_prompt(names)
        queries.append(Query(k // 2, k % 2, 0, images[k // 2], names, answers, f"{prefix} {suffix}", prefix, suffix))
    return queries


def teacher_forced_choice(processor, model, text: str, image: np.ndarray, answers: list[str]) -> int:
    """The option greedy decoding would say, computed plainly: one full forward pass per option on the chat text
    followed by the answer, the option whose every token is the arg-max winning (the longest such, then the most
    likely), else the most likely option."""
    import torch
    from PIL import Image

    scored = []
    for answer in answers:
        prompt = processor(text=[text], images=[[Image.fromarray(image)]], return_tensors="pt", add_special_tokens=False)
        ids = processor.tokenizer(answer, add_special_tokens=False)["input_ids"]
        full = processor(text=[text + answer], images=[[Image.fromarray(image)]], return_tensors="pt",
                         add_special_tokens=False)  # fmt: skip
        start = prompt["input_ids"].shape[1]
        assert full["input_ids"][0, start:].tolist() == ids
        with torch.no_grad():
            logits = model(**full).logits[0, start - 1 : start - 1 + len(ids)].float()
        logprob = float(torch.log_softmax(logits, -1)[torch.arange(len(ids)), ids].sum())
        scored.append((bool((logits.argmax(-1) == torch.tensor(ids)).all()), len(ids), logprob))
    greedy = [k for k, s in enumerate(scored) if s[0]]
    if greedy:
        longest = max(scored[k][1] for k in greedy)
        return max((k for k in greedy if scored[k][1] == longest), key=lambda k: (scored[k][2], -k))
    return max(range(len(answers)), key=lambda k: (scored[k][2], -k))


@pytest.mark.parametrize("mode", ["cl", "ord"])
def test_likelihood_agrees_with_plain_teacher_forcing(tiny_vlm, mode):
    from aclbuild.labeling.vlm import VlmBackend

    backend = VlmBackend.from_pretrained(str(tiny_vlm), scoring="likelihood", device="cpu")
    prefix_passes = PrefixPasses(backend.model)
    queries = make_queries(QUERIES, mode)
    replies = ask(backend, queries)
    assert backend.prefix_shared is True  # the tiny models' caches continue exactly
    assert prefix_passes.count == QUERIES // 2  # one prefix pass per image for both rounds
    expected = [teacher_forced_choice(backend.processor, backend.model, backend.chat_text(q), q.image, q.answers)
                for q in queries]  # fmt: skip
    assert [r.choice for r in replies] == expected
    assert len(set(expected)) > 1  # the proof is not about a constant answer
    backend.prefix_shared = False  # the fallback for models whose cache cannot be continued: full passes
    assert [r.choice for r in ask(backend, queries[:6])] == expected[:6]
    assert backend.provenance["likelihood_passes"].startswith("one full pass")


def test_kept_prefixes_serve_later_rounds(tiny_vlm):
    """-R asks a block's rounds in separate calls: an image's kept prefix cache serves all of them, and a cache that
    prepare counted on but run no longer finds is made again from the image prepare kept."""
    from aclbuild.labeling.vlm import VlmBackend

    queries = make_queries(12)
    whole = VlmBackend.from_pretrained(str(tiny_vlm), scoring="likelihood", device="cpu")
    expected = [r.choice for r in ask(whole, queries)]
    backend = VlmBackend(whole.processor, whole.model, scoring="likelihood")  # the same model, a fresh labeler
    prefix_passes = PrefixPasses(backend.model)
    backend.keep_prefixes = 6
    choices = [r.choice for r in ask(backend, queries[0::2])]
    later = backend.prepare(queries[1::2])
    assert all(p.inputs is None for p in later.passes) and prefix_passes.count == 6  # no pixels: caches kept
    assert [r.choice for r in ask(backend, queries[1::2])] == expected[1::2] and prefix_passes.count == 6
    assert choices == expected[0::2]
    backend._kept.clear()  # the worker's snapshot still promised them
    raw = backend.run(later)
    assert prefix_passes.count == 12
    assert [r.choice for r in backend.replies(queries[1::2], later, raw)] == expected[1::2]


def test_prepare_needs_no_model(tiny_vlm):
    """prepare runs in the loader's worker: no model, CPU tensors, a value that pickles."""
    import torch

    from aclbuild.labeling.vlm import VlmBackend

    for scoring in ("generate", "likelihood"):
        backend = VlmBackend.from_pretrained(str(tiny_vlm), scoring=scoring, device="cpu", batch_size=3)
        backend.model = None
        prepared = pickle.loads(pickle.dumps(backend.prepare(make_queries(8))))
        tensors = [v for c in prepared.chunks for v in c.values()]
        tensors += [v for p in prepared.passes for v in (*p.inputs.values(), p.rows_ids)]
        assert tensors and all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tensors)
        assert len(prepared.chunks if scoring == "generate" else prepared.passes) == (3 if scoring == "generate" else 4)


def test_generate_stages(tiny_vlm):
    """Generation through the stages: each query's reply is what the model generates for it alone."""
    import torch

    from aclbuild.labeling.vlm import VlmBackend

    backend = VlmBackend.from_pretrained(str(tiny_vlm), scoring="generate", device="cpu", max_new_tokens=3,
                                         batch_size=2)  # fmt: skip
    queries = make_queries(4)
    replies = ask(backend, queries)
    for q, reply in zip(queries, replies):
        inputs = backend.encode([q])
        with torch.inference_mode():
            out = backend.model.generate(**inputs, max_new_tokens=3, do_sample=False,
                                         pad_token_id=backend.tokenizer.pad_token_id)  # fmt: skip
        alone = backend.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert reply.text == alone.strip() and reply.choice is None


@NO_TORCHVISION
def test_qwen2vl_images_of_several_sizes(tmp_path):
    """Qwen2-VL's M-RoPE offset after the prefix depends on the image's grid: every image's suffix pass continues
    from its own, also from a kept cache after other images' prefix passes."""
    from aclbuild.labeling.vlm import VlmBackend

    backend = VlmBackend.from_pretrained(str(build_tiny_vlm("qwen2vl", tmp_path / "q")), scoring="likelihood",
                                         device="cpu")  # fmt: skip
    prefix_passes = PrefixPasses(backend.model)
    backend.processor.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": 84 * 84}  # 4x4 to 6x6 patches
    rng = np.random.default_rng(1)
    shapes = [(40, 40, 3), (40, 80, 3), (80, 40, 3)]
    images = [rng.integers(0, 256, shapes[i % 3], dtype=np.uint8) for i in range(QUERIES // 2)]
    queries = [dataclasses.replace(q, image=images[q.index]) for q in make_queries(QUERIES)]
    prepared = backend.prepare(queries)
    assert len({p.inputs["input_ids"].shape[1] for p in prepared.passes}) == 2  # grids of 16 and 24 patches
    expected = [teacher_forced_choice(backend.processor, backend.model, backend.chat_text(q), q.image, q.answers)
                for q in queries]  # fmt: skip
    backend.keep_prefixes = QUERIES // 2  # -R: the second round's suffix passes follow other images' prefix passes
    first = ask(backend, queries[0::2])
    later = backend.prepare(queries[1::2])
    cached = backend.run(later)
    assert prefix_passes.count == QUERIES // 2
    backend.prefix_shared = False  # the same rows, each scored by a full pass
    assert np.allclose(cached[1], backend.run(later)[1], atol=1e-4)  # one position off: ~3e-3 apart
    choices = [r.choice for r in first + backend.replies(queries[1::2], later, cached)]
    assert choices == expected[0::2] + expected[1::2]


def test_generate_end_to_end(tiny_vlm, tmp_path, cli):
    out = tmp_path / "gen"
    result = cli("generate", "digits", "--labeler", "vlm", "--model", tiny_vlm, "--limit", "4", "--num-rounds", "2",
                 "--max-new-tokens", "3", "--max-retries", "1", "--output-dir", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = pq.read_table(out / "labels.parquet").to_pylist()
    assert len(rows) == 8 and all(r["answer"] for r in rows)
    provenance = json.loads((out / "labels.json").read_text())["provenance"]
    assert provenance["labeler"] == "vlm" and provenance["model"] == str(tiny_vlm)
    assert provenance["revision"] == "local" and provenance["scoring"] == "generate"
    scored = cli("generate", "digits", "--labeler", "vlm", "--model", tiny_vlm, "--limit", "4", "--scoring",
                 "likelihood", "-R", "--num-rounds", "2", "--output-dir", tmp_path / "lik")  # fmt: skip
    assert scored.exit_code == 0, scored.stderr
    built = cli("build", tmp_path / "lik" / "labels.parquet", "--dataset", "acldigits", "--allow-kind-mismatch",
                "--output-dir", tmp_path / "repo")  # fmt: skip
    assert built.exit_code == 0, built.stderr
    card = (tmp_path / "repo" / "README.md").read_text()
    assert "vision-language model" in card and str(tiny_vlm) in card  # counted as VLM labels, model named
    provenance = json.loads((tmp_path / "lik" / "labels.json").read_text())["provenance"]
    assert provenance["scoring"] == "likelihood" and provenance["likelihood_passes"].startswith("prefix cache")
    assert all(r["label"] in r["candidates"] for r in pq.read_table(tmp_path / "lik" / "labels.parquet").to_pylist())


def test_chat_text_has_one_bos(tmp_path):
    """Gemma 3: the template writes <bos> and the tokenizer would add another; templated text is encoded without."""
    from aclbuild.labeling.vlm import VlmBackend

    backend = VlmBackend.from_pretrained(str(build_tiny_vlm("gemma3", tmp_path / "g")), device="cpu")
    ids = backend.encode(make_queries(2))["input_ids"][0].tolist()
    assert ids.count(backend.tokenizer.bos_token_id) == 1


def test_refusals(tmp_path, cli, monkeypatch):
    import huggingface_hub.constants

    # HF_HUB_OFFLINE is read when huggingface_hub is imported; an earlier import would try the network for the id
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    folder = build_tiny_vlm("idefics3", tmp_path / "model")
    no_weights = tmp_path / "no-weights"
    shutil.copytree(folder, no_weights)
    for weights in no_weights.glob("*.safetensors"):
        weights.unlink()
    no_template = tmp_path / "no-template"
    shutil.copytree(folder, no_template)
    for template in no_template.glob("chat_template.*"):
        template.unlink()
    for config in ("processor_config.json", "tokenizer_config.json"):
        path = no_template / config
        if path.is_file():
            data = json.loads(path.read_text())
            data.pop("chat_template", None)
            path.write_text(json.dumps(data))
    cases = {no_weights: "cannot load a chat VLM", no_template: "no chat template",
             "nobody/not-a-model": "cannot load a chat VLM"}  # fmt: skip
    for model, message in cases.items():
        result = cli("generate", "digits", "--labeler", "vlm", "--model", model, "--limit", "2",
                     "--output-dir", tmp_path / "out" / Path(str(model)).name)  # fmt: skip
        assert result.exit_code == 2, (model, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_processor_without_images_is_refused():
    from aclbuild.errors import InputError
    from aclbuild.labeling.vlm import check_processor

    class TextOnly:
        chat_template = "{{ messages }}"
        tokenizer = object()

    with pytest.raises(InputError, match="cannot take images"):
        check_processor(TextOnly(), "some/text-model")
