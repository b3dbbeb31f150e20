"""Lessons 05/06's library on the real path: an open_clip ViT (random weights, the real code) and CIFAR-10 / STL-10
in torchvision's on-disk layout, streamed through a DataLoader.  Fine-tuning, WiSE-FT, a plane and Appendix K's
forward-over-forward derivative through ``nn.MultiheadAttention`` run, give finite numbers, and the streamed path
computes what the in-memory one does."""
import copy
import json

import numpy as np
import open_clip
import pytest
import torch

from fmcls_lib import backbones, data, finetune as ft, landscape, training, weights
from fmcls_lib.standins import datasets as standin_data

VIT_CFG = {"embed_dim": 16,
           "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 32, "layers": 2, "head_width": 16, "mlp_ratio": 2.0},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """A random-weight open_clip ViT CLIP at 64 px, as ``load_clip`` returns a real one (its own preprocess)."""
    path = tmp_path_factory.mktemp("cfg") / "fmcls-test-vit-64.json"
    path.write_text(json.dumps(VIT_CFG))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("fmcls-test-vit-64")
    return backbones.CLIPBackbone("test-vit-64", model.eval(), open_clip.get_tokenizer("fmcls-test-vit-64"),
                                  preprocess, "0" * 64, torch.device("cpu"))


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    standin_data.write_cifar10(root, train_per_class=6, test_per_class=3)
    standin_data.write_stl10(root, train_per_class=2, test_per_class=3, unlabeled=1)
    mp = pytest.MonkeyPatch()
    mp.setenv("FMCLS_DATA", str(root))
    mp.setenv("FMCLS_DATASET_CHECKSUMS", "off")
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def setup(vit, real_data):
    domains = data.domains("cifar10")
    X = ft.load_images(vit, "cifar10", domains)
    W = torch.nn.functional.normalize(torch.randn(10, VIT_CFG["embed_dim"], generator=torch.Generator().manual_seed(0)), dim=-1)
    model = ft.from_zero_shot(vit, W)
    return domains, X, W, model, training.state_dict(model)


def test_real_splits_are_streams_with_a_shift_domain(setup, vit):
    domains, X, *_ = setup
    assert domains == ("photo", "stl10")
    x, y = X["test", "stl10"]
    assert isinstance(x, ft.ImageStream) and len(x) == len(y) > 0
    sub = x[torch.tensor([2, 0])]
    assert isinstance(sub, ft.ImageStream) and len(sub) == 2
    t = sub.tensor()
    assert t.shape == (2, 3, 64, 64)
    torch.testing.assert_close(t[1], vit.preprocess(x.dataset.images[0]))   # decoded alone, the backbone's preprocess


def test_streamed_fine_tune_equals_the_in_memory_one(setup):
    _, X, W, model, theta_0 = setup
    (x_tr, y_tr), (x_va, y_va) = X["train", "photo"], X["val", "photo"]
    recipe = ft.Recipe(mode="e2e", epochs=1, batch_size=16, lr=1e-3, warmup_steps=1, augment=0.5)
    streamed = ft.finetune(model, recipe, x_tr, y_tr, x_va, y_va, progress=False, device="cpu").state_dict
    model.load_state_dict(theta_0)
    in_memory = ft.finetune(model, recipe, x_tr.tensor(), y_tr, x_va.tensor(), y_va, progress=False, device="cpu").state_dict
    model.load_state_dict(theta_0)
    assert all(v.device.type == "cpu" for v in streamed.values())
    assert any(not torch.equal(streamed[k], theta_0[k]) for k in theta_0)
    for k in theta_0:
        torch.testing.assert_close(streamed[k], in_memory[k])


def test_wise_curve_plane_and_appendix_k_on_a_vit(setup):
    domains, X, W, model, theta_0 = setup
    x_tr, y_tr = X["train", "photo"]
    runs = [ft.finetune(model, ft.Recipe(epochs=1, batch_size=20, lr=lr, seed=s), x_tr, y_tr, *X["val", "photo"],
                        progress=False, device="cpu").state_dict for s, lr in ((0, 1e-3), (1, 3e-3))]
    model.load_state_dict(theta_0)
    Xt = {d: X["test", d][0] for d in domains}
    curve = weights.wise_curve(model, theta_0, runs[0], [0.0, 0.5, 1.0], Xt, progress=False)
    assert all(torch.isfinite(lg).all() for r in curve.values() for lg in r.values())
    for d in domains:  # alpha = 0 is the zero-shot model, alpha = 1 the fine-tuned one
        torch.testing.assert_close(curve[0.0][d], weights.logits_of(model, theta_0, {d: Xt[d]})[d])
        torch.testing.assert_close(curve[1.0][d], weights.logits_of(model, runs[0], {d: Xt[d]})[d])
    accs = ft.accuracies(curve[0.5], {d: X["test", d][1] for d in domains})
    assert set(accs) == {"photo", "stl10", "ood"}

    x, y = X["test", "photo"]
    pts = {"theta_0": theta_0, "theta_1": runs[0], "theta_2": runs[1]}
    grid = landscape.plane_grid(model, pts, x, y, size=2, progress=False)
    err, xs, ys = grid.error, grid.xs, grid.ys
    assert err.shape == (2, 2) and torch.isfinite(err).all()
    pl = landscape.plane(theta_0, runs[0], runs[1], [k for k, _ in model.named_parameters()])
    e1, l1 = landscape.grid_loop(model, pl, xs, ys, x, y, progress=False)
    e2, l2 = landscape.grid_batched(model, pl, xs, ys, x, y, chunk=2, progress=False)
    assert torch.equal(e1, e2)
    torch.testing.assert_close(l1, l2, atol=1e-4, rtol=1e-4)

    learned = weights.learned_soup(runs, model, x.tensor(), y, epochs=1)
    soup, mix = learned.soup, learned.weights
    assert torch.isfinite(mix).all() and all(v.device.type == "cpu" for v in soup.values())

    gaps = landscape.soup_ensemble_gaps(model, runs[0], runs[1], [0.25, 0.5], x, y)
    assert all(np.isfinite(g[q]) for pts_ in gaps.values() for g in pts_ for q in ("measured", "approx", "curvature"))
    assert torch.backends.mha.get_fastpath_enabled()   # the math-attention switch is restored


def test_appendix_k_second_derivative_through_attention_matches_finite_differences(setup):
    """The jvp-over-jvp curvature through ``nn.MultiheadAttention`` against a central difference of the loss in
    float64 (the module itself, no ``torch.func``)."""
    from torch.func import functional_call

    _, X, W, model, theta_0 = setup
    g = torch.Generator().manual_seed(3)
    theta_1 = {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in theta_0.items()}
    x, y = X["test", "photo"][0].tensor(), X["test", "photo"][1]
    r = landscape.soup_ensemble_gap(model, theta_0, theta_1, 0.4, x, y, beta=1.0)
    m64 = copy.deepcopy(model).double().eval()

    def loss(a):
        sd = {k: theta_0[k].double() + a * (theta_1[k].double() - theta_0[k].double()) for k in theta_0}
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(functional_call(m64, sd, (x.double(),)), y))

    h = 1e-3
    assert r["curvature"] == pytest.approx((loss(0.4 + h) - 2 * loss(0.4) + loss(0.4 - h)) / h ** 2, rel=1e-3, abs=1e-5)
    assert np.isfinite(r["approx"]) and np.isfinite(r["measured"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_everything_runs_on_the_backbones_device(vit, real_data):
    cuda = backbones.CLIPBackbone(vit.name, vit.model.cuda(), vit.tokenizer, vit.preprocess, vit.weights_hash,
                                  torch.device("cuda"))
    try:
        X = ft.load_images(cuda, "cifar10", data.domains("cifar10"))
        W = torch.nn.functional.normalize(torch.randn(10, VIT_CFG["embed_dim"]), dim=-1)
        model = ft.from_zero_shot(cuda, W)
        assert ft.device_of(model).type == "cuda"
        theta_0 = training.state_dict(model)
        run = ft.finetune(model, ft.Recipe(epochs=1, batch_size=16), *X["train", "photo"], *X["val", "photo"],
                          progress=False).state_dict
        assert all(v.device.type == "cpu" for v in run.values()) and ft.device_of(model).type == "cuda"
        x, y = X["test", "photo"]
        assert np.isfinite(landscape.evaluate(model, weights.wise(theta_0, run, 0.5), x, y)[1])
        gaps = landscape.soup_ensemble_gaps(model, theta_0, run, [0.5], x, y)
        assert all(np.isfinite(g["curvature"]) for gs in gaps.values() for g in gs)
        soup = weights.learned_soup([theta_0, run], model, x, y, epochs=1).soup
        err = landscape.plane_grid(model, {"a": theta_0, "b": run, "c": soup}, x, y, size=2, batched=True,
                                       progress=False).error
        assert torch.isfinite(err).all()
    finally:
        vit.model.cpu()


def test_batchnorm_statistics_from_a_streamed_split(micro, real_data, monkeypatch):
    """A BatchNorm backbone (open_clip's ResNets have them) on a real split: update_bn reads the stream; a small one is
    decoded whole (the same statistics as its tensor), a large one in batches."""
    x_bn = ft.ImageStream(data.load("cifar10", "train"), micro.preprocess)[:40]
    x, y = ft.ImageStream(data.load("cifar10", "test"), micro.preprocess), torch.as_tensor(data.load("cifar10", "test").labels)
    W = torch.nn.functional.normalize(torch.randn(10, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    model = ft.from_zero_shot(micro, W)
    assert landscape.has_batchnorm(model)
    sd = training.state_dict(model)
    assert landscape.evaluate(model, sd, x, y, x_bn) == landscape.evaluate(model, sd, x.tensor(), y, x_bn.tensor())
    monkeypatch.setattr(landscape, "BN_BATCH", 16)
    err, loss = landscape.evaluate(model, sd, x, y, x_bn)
    assert 0 <= err <= 1 and np.isfinite(loss)
