import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach for the network
os.environ.setdefault("FMCLS_SPLITS", "smoke")  # small evaluation splits (lessons' kernels inherit it)


@pytest.fixture(scope="session", autouse=True)
def isolated_dirs(tmp_path_factory):
    """A fresh cache and figures folder per test session: never the user's, never the committed ones."""
    cache = os.environ.get("FMCLS_TEST_CACHE") or str(tmp_path_factory.mktemp("fmcls_cache"))
    figs = str(tmp_path_factory.mktemp("figures"))
    os.environ["FMCLS_CACHE"] = cache
    os.environ["FMCLS_FIGURES"] = figs
    yield {"cache": cache, "figures": figs}


def built(kind: str, name: str) -> None:
    """Build a test model (``micro``, ``micro-dino``) into the test cache unless it is there: loaders never train."""
    from fmcls_lib import models, pretrain
    if models.cached(kind, name) is None:
        pretrain.build_cached(kind, name, progress=False)


@pytest.fixture(scope="session")
def micro():
    from fmcls_lib import backbones
    built("clip", "micro")
    return backbones.load_clip("micro", device="cpu")  # exact float32 comparisons, also on a GPU box


@pytest.fixture(scope="session")
def micro_splits(micro):
    from fmcls_lib import features, world
    return features.load_splits(micro, "world/shapes", world.DOMAINS, progress=False)


@pytest.fixture(scope="session")
def micro_pipe(micro):
    from fmcls_lib import backbones
    built("generator", "micro")
    return backbones.load_generator("micro")


@pytest.fixture(scope="session")
def micro_dino():
    from fmcls_lib import backbones
    built("ssl", "micro-dino")
    return backbones.load_ssl("micro-dino")
