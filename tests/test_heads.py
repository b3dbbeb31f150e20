import numpy as np
import open_clip
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from fmcls_lib import heads, prompts, world


def test_zero_shot_head_rows_are_normalised_class_embeddings(micro):
    W = heads.zero_shot_head(micro, world.SHAPES, prompts.PHOTO)
    assert W.shape == (len(world.SHAPES), 32)
    torch.testing.assert_close(W.norm(dim=-1), torch.ones(len(world.SHAPES)))
    # independent computation: embed "a photo of a <class>." directly
    torch.testing.assert_close(W, micro.encode_text([f"a photo of a {c}." for c in world.SHAPES]),
                               atol=1e-5, rtol=1e-5)


def test_ensemble_of_template_heads_equals_open_clip_builder(micro):
    H = heads.per_template_heads(micro, world.SHAPES[:4], prompts.OPENAI_7)
    direct = open_clip.build_zero_shot_classifier(micro.model, micro.tokenizer, list(world.SHAPES[:4]),
                                                  list(prompts.OPENAI_7), device="cpu").T
    torch.testing.assert_close(heads.ensemble(H, range(7)), direct, atol=1e-5, rtol=1e-5)


def test_template_data():
    assert len(prompts.OPENAI_80) == 80 and len(prompts.OPENAI_7) == 7
    assert "itap of a {}." in prompts.OPENAI_7 and all("{}" in t for t in prompts.OPENAI_80)


def test_logits_and_accuracy():
    f = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1)
    W = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    torch.testing.assert_close(heads.logits(f, W), 100 * torch.einsum("nd,cd->nc", f, W))
    y = heads.logits(f, W).argmax(1)
    assert heads.accuracy(heads.logits(f, W), y) == 1.0
    assert heads.accuracy(y, (y + 1) % 3) == 0.0


def _blobs(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(0, 1.0, (n, 5)) + np.eye(3, 5)[y] * 1.5 + shift
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y)


def test_probe_picks_C_by_validation_accuracy_only():
    Xtr, ytr = _blobs(40, 0)
    Xva, yva = _blobs(300, 1)
    Cs = (1e-3, 1e-1, 10.0)
    probe = heads.linear_probe(Xtr, ytr, Xva, yva, Cs=Cs)
    independent = {C: (LogisticRegression(C=C, max_iter=1000).fit(Xtr, ytr).predict(Xva) == yva.numpy()).mean()
                   for C in Cs}
    best = max(Cs, key=lambda C: (independent[C], -C))
    assert probe.C == best
    assert probe.val_accuracy == pytest.approx(independent)
    # the choice depends on the validation labels: scrambling them changes the scores
    scrambled = heads.linear_probe(Xtr, ytr, Xva, torch.roll(yva, 1), Cs=Cs)
    assert scrambled.val_accuracy != probe.val_accuracy


def test_forward_selection_starts_with_best_single_template():
    torch.manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(60, 8), dim=-1)
    y = torch.arange(60) % 3
    H = torch.nn.functional.normalize(torch.randn(6, 3, 8), dim=-1)
    chosen, curve = heads.forward_select_templates(H, f, y)
    singles = [heads.accuracy(heads.logits(f, H[t]), y) for t in range(6)]
    assert chosen[0] == int(np.argmax(singles)) and curve[0] == max(singles)
    assert all(b > a for a, b in zip(curve, curve[1:]))  # each addition strictly improved validation


def test_probe_curve_shapes_and_ood(micro_splits):
    curve = heads.probe_curve(micro_splits, [1, 2], seeds=2, domains=world.DOMAINS)
    assert set(curve) == {1, 2}
    assert set(curve[1]) == set(world.DOMAINS) | {"ood"}
    assert all(len(v) == 2 for v in curve[2].values())
    for s in range(2):
        assert curve[1]["ood"][s] == pytest.approx(np.mean([curve[1][d][s] for d in world.SHIFTS]))


def test_probe_curve_correctness_is_what_the_accuracies_average(micro_splits):
    curve, right = heads.probe_curve(micro_splits, [1, 2], seeds=2, domains=world.DOMAINS, return_correct=True)
    n = len(micro_splits["test", "photo"][1])
    for k in (1, 2):
        assert set(right[k]) == set(world.DOMAINS)
        for d in world.DOMAINS:
            assert right[k][d].shape == (2, n) and right[k][d].dtype == bool
            assert curve[k][d] == pytest.approx(right[k][d].mean(1).tolist())
    assert curve == heads.probe_curve(micro_splits, [1, 2], seeds=2, domains=world.DOMAINS)


def test_single_threaded_restores_the_thread_count():
    n = torch.get_num_threads()
    with heads.single_threaded():
        assert torch.get_num_threads() == 1
        with heads.single_threaded():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n
