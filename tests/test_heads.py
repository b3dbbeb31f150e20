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


def test_per_class_accuracy_is_the_recall_of_each_class():
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = torch.tensor([0, 1, 0, 1, 1, 0, 0, 2, 1])
    acc = heads.per_class_accuracy(pred, y, ["a", "b", "c", "empty"])
    assert list(acc) == ["a", "b", "c", "empty"]
    assert acc["a"] == pytest.approx(2 / 3) and acc["b"] == 1.0 and acc["c"] == 0.25
    assert np.isnan(acc["empty"])  # no image of that class
    logits = torch.nn.functional.one_hot(pred, 4).float() * 3.0  # logits give the same answer as predictions
    assert heads.per_class_accuracy(logits, y, ["a", "b", "c", "empty"])["c"] == 0.25
    # the images-weighted mean of the per-class accuracies is the accuracy
    counts = torch.bincount(y, minlength=3).numpy()
    assert np.dot(counts, [acc[c] for c in "abc"]) / counts.sum() == pytest.approx(heads.accuracy(pred, y))


def _adapter_data(seed=0, n=7, c=5, d=16):
    g = torch.Generator().manual_seed(seed)
    norm = torch.nn.functional.normalize
    return norm(torch.randn(n, d, generator=g), dim=-1), norm(torch.randn(c, d, generator=g), dim=-1)


def test_clip_adapter_logits_follow_the_slide_with_both_adapters():
    f, W = _adapter_data()
    torch.manual_seed(0)
    model = heads.ClipAdapter(16, W, ratio=0.3, text_ratio=0.4, scale=10.0)
    A_v, A_t = model.mlp, model.text_mlp
    with torch.no_grad():  # an independent computation of f* W*^T with unit rows
        f_star = 0.3 * A_v(f) + 0.7 * f
        W_star = 0.4 * A_t(W) + 0.6 * W
        want = 10.0 * torch.einsum("nd,cd->nc", f_star / f_star.norm(dim=1, keepdim=True),
                                   W_star / W_star.norm(dim=1, keepdim=True))
        torch.testing.assert_close(model(f), want)
        # beta = 0: the text adapter is not used, W as given (the visual adapter alone)
        torch.testing.assert_close(heads.clip_adapter_logits(f, W, A_v, 0.3, A_t, 0.0, 10.0),
                                   10.0 * torch.nn.functional.normalize(f_star, dim=-1) @ W.T)
        # alpha = beta = 0 is zero-shot CLIP
        torch.testing.assert_close(heads.clip_adapter_logits(f, W, A_v, 0.0, A_t, 0.0, 10.0), heads.logits(f, W, 10.0))


def test_visual_only_clip_adapter_is_unchanged_by_the_text_option():
    """The default adapter draws the same weights and has the same parameters as before the text adapter
    existed: text_ratio = 0 builds nothing and draws nothing."""
    f, W = _adapter_data(seed=1)
    torch.manual_seed(3)
    a = heads.ClipAdapter(16, W)
    after_a = torch.rand(1)
    torch.manual_seed(3)
    b = heads.ClipAdapter(16, W, text_ratio=0.5)
    assert a.text_mlp is None and set(a.state_dict()) == {"W", "mlp.0.weight", "mlp.2.weight"}
    assert set(b.state_dict()) - set(a.state_dict()) == {"text_mlp.0.weight", "text_mlp.2.weight"}
    torch.testing.assert_close(a.mlp[0].weight, b.mlp[0].weight)  # A_v is drawn first, the same in both
    torch.manual_seed(3)
    torch.nn.Linear(16, 4, bias=False), torch.nn.Linear(4, 16, bias=False)
    assert torch.equal(torch.rand(1), after_a)  # the default consumes exactly A_v's draws
    with torch.no_grad():
        x = 0.2 * a.mlp(f) + 0.8 * f
        assert torch.equal(a(f), 100.0 * torch.nn.functional.normalize(x, dim=-1) @ W.T)


def test_clip_adapter_trains_the_text_adapter_when_asked():
    f, W = _adapter_data(seed=2, n=24, c=4)
    views = torch.stack([f, f])
    y = torch.arange(24) % 4
    model, fit = heads.clip_adapter(views, y, W, f, y, epochs=3, text_ratio=0.2, scale=10.0)
    assert model.text_mlp is not None and len(fit.history) == 3
    assert any(p.requires_grad for p in model.text_mlp.parameters())


def test_effective_robustness_statistic_is_distance_above_the_probes_trend():
    rng = np.random.default_rng(0)
    domains, n, seeds = ("photo", "sketch", "pixel"), 30, 3
    zs = {d: rng.random(n) < 0.7 for d in domains}                  # one run: counts `seeds` times
    probes = [{d: rng.random((seeds, n)) < p for d in domains} for p in (0.3, 0.5, 0.8)]
    stat = heads.effective_robustness([zs, *probes], domains, seeds)

    def direct(idx):  # accuracies on the resampled images, straight from the correctness arrays
        pts = [(np.mean(r["photo"][..., idx["photo"]]), np.mean([np.mean(r[d][..., idx[d]]) for d in domains[1:]]))
               for r in probes]
        trend = np.polyfit(*zip(*pts), 1)
        zs_id, zs_ood = zs["photo"][idx["photo"]].mean(), np.mean([zs[d][idx[d]].mean() for d in domains[1:]])
        return zs_ood - np.polyval(trend, zs_id)

    every = {d: np.arange(n) for d in domains}
    assert stat(*every.values()) == pytest.approx(direct(every))
    draws = {d: rng.integers(0, n, (4, n)) for d in domains}       # 4 resamples at once (vectorised), with repeats
    got = stat(*draws.values())
    assert got.shape == (4,)
    for b in range(4):
        assert got[b] == pytest.approx(direct({d: draws[d][b] for d in domains}))


def test_knn_predict_is_a_majority_vote_with_ties_to_the_smallest_label():
    f_train = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]]), dim=-1)
    y_train = torch.tensor([2, 1, 1, 0])
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.0, 1.0]]), dim=-1)
    assert heads.knn_predict(f_train, y_train, q, k=3).tolist() == [1, 1]  # two votes for 1 beat one for 2
    assert heads.knn_predict(f_train, y_train, q, k=2).tolist() == [1, 0]  # 2 and 1 tie: 1; 0 and 1 tie: 0
