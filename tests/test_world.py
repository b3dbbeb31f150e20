import numpy as np
import pytest

from fmcls_lib import world


def test_render_is_deterministic_and_seed_dependent():
    scenes, _ = world.task_scenes("world/shapes", "val", "photo")
    a, b = world.render(scenes[0]), world.render(scenes[0])
    assert a.shape == (world.RES, world.RES, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(world.render(scenes[0]), world.render(scenes[12]))
    again, _ = world.task_scenes("world/shapes", "val", "photo")
    assert scenes == again


@pytest.mark.parametrize("domain", world.DOMAINS)
def test_every_shape_is_visible_in_every_domain(domain):
    for shape in world.SHAPES:
        s = world.Scene(shape, "red", "large", domain, 0.0, 0.0, 0.0, seed=7)
        plain = world.Scene(shape, "red", "large", domain, 0.0, 0.5, 0.5, seed=7)  # moved away
        assert np.abs(world.render(s).astype(int) - world.render(plain).astype(int)).mean() > 2, shape


def test_world_size():
    assert len(world.SHAPES) >= 10 and len(world.COLORS) >= 8 and len(world.DOMAINS) >= 4
    assert len(world.CAPTION_TEMPLATES) >= 15
    assert ("pentagon", "hexagon") in world.CONFUSABLE_PAIRS and ("circle", "ring") in world.CONFUSABLE_PAIRS


def test_captions_name_attributes_and_domain_and_never_the_hidden_names():
    scenes = world.pretrain_scenes(3000)
    caps = [world.caption(s) for s in scenes]
    assert len(set(caps)) > 300
    assert world.NEVER_NAMED, "some classes must be named only by synonyms"
    for s, c in zip(scenes, caps):
        for hidden in world.NEVER_NAMED:
            assert hidden not in c, c
        names = world.CAPTION_NAMES[s.shape]
        assert any(n in c for n in names), (s, c)
    domain_words = sum(any(w in c for w in world.DOMAIN_WORDS[s.domain] + (world.DOMAIN_ADJ[s.domain],))
                       for s, c in zip(scenes, caps))
    assert domain_words > 0.4 * len(caps)
    assert sum(s.color in c for s, c in zip(scenes, caps)) > 0.4 * len(caps)
    assert "an orange" in " ".join(caps) and "a orange" not in " ".join(caps)


def test_pretraining_stream_is_disjoint_from_downstream_splits():
    pre = {s.seed for s in world.pretrain_scenes(5000)}
    for task in world.TASKS:
        for split in world.SPLITS:
            scenes, _ = world.task_scenes(task, split, "photo")
            assert pre.isdisjoint(s.seed for s in scenes)
    val = {s.seed for s in world.task_scenes("world/shapes", "val", "photo")[0]}
    test = {s.seed for s in world.task_scenes("world/shapes", "test", "photo")[0]}
    assert val.isdisjoint(test)


@pytest.mark.parametrize("task", list(world.TASKS))
def test_tasks_are_class_balanced_and_labelled_correctly(task):
    scenes, labels = world.task_scenes(task, "val", "sketch")
    t = world.TASKS[task]
    counts = np.bincount(labels, minlength=len(t.classnames))
    assert (counts == t.per_class["val"]).all()
    for s, y in zip(scenes, labels):
        assert all(getattr(s, k) == v for k, v in t.label_attrs(int(y)).items())
        assert s.domain == "sketch"


def test_pretraining_is_photo_heavy_with_all_domains():
    doms = [s.domain for s in world.pretrain_scenes(4000)]
    frac = {d: doms.count(d) / len(doms) for d in world.DOMAINS}
    assert frac["photo"] > 0.6 and all(frac[d] > 0.02 for d in world.SHIFTS)


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluation_splits_are_large_and_smoke_splits_are_their_prefix(split):
    full, yf = world.task_scenes("world/shapes", split, "sketch")
    assert len(full) == {"val": 100, "test": 400}[split] * len(world.SHAPES)
    k = world.SMOKE_PER_CLASS["world/shapes"][split]
    small, ys = world.task_scenes("world/shapes", split, "sketch", k)
    assert small == full[:len(small)] and (ys == yf[:len(ys)]).all()
    assert (np.bincount(ys) == k).all()


def test_data_load_follows_the_split_size_setting():
    from fmcls_lib import data
    from fmcls_lib.errors import UnknownNameError
    before = data.split_sizes()
    try:
        data.set_split_sizes("smoke")
        assert len(data.load("world/shapes", "test", "photo")) == 50 * 12
        data.set_split_sizes("full")
        assert len(data.load("world/shapes", "test", "photo")) == 400 * 12
        assert len(data.load("world/shapes", "train", "photo")) == 64 * 12
        with pytest.raises(UnknownNameError):
            data.set_split_sizes("tiny")
    finally:
        data.set_split_sizes(before)
