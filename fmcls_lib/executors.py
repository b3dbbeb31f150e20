"""Where independent jobs (the soup ingredients of a sweep) run: in this process, or as Ray tasks.

An executor has one method, ``map(fn, shared, items, desc)``, returning ``[fn(shared, item) for item in
items]`` in order.  ``shared`` is sent once (Ray: ``ray.put``) rather than once per job.  Jobs write their
results to the shared cache directory themselves (``cache.put`` is atomic), so a sweep that dies half-way
keeps every finished ingredient and a re-run only trains the missing ones.

    get(None) / get("local")          -> InProcess()
    get("ray")                        -> Ray(): a local Ray instance, or the cluster in $RAY_ADDRESS
    get("ray://head:10001")           -> Ray(address=...): a running cluster (its nodes must share $FMCLS_CACHE)
"""
from __future__ import annotations

from tqdm.auto import tqdm

from .errors import UnknownNameError


class InProcess:
    """Run the jobs one after another in this process (the default)."""

    name = "in-process"

    def map(self, fn, shared, items, desc: str = "jobs", progress: bool = True) -> list:
        return [fn(shared, it) for it in tqdm(list(items), disable=not progress, desc=desc)]


class Ray:
    """Run each job as a Ray task (``ray.remote``), ``num_cpus`` / ``num_gpus`` per task.

    ``address=None`` starts (or joins) a local Ray instance; ``"auto"`` or ``"ray://host:port"`` joins a
    cluster.  Extra keyword arguments go to ``ray.init``.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0, **init_kwargs):
        try:
            import ray
        except ImportError as e:
            raise ImportError("the Ray executor needs Ray: pip install 'ray>=2.9' "
                              "(or use the default in-process executor, executor=None)") from e
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **init_kwargs)
        self.options = {"num_cpus": num_cpus, "num_gpus": num_gpus}

    def map(self, fn, shared, items, desc: str = "jobs", progress: bool = True) -> list:
        ray, items = self.ray, list(items)
        remote = ray.remote(**self.options)(fn)
        ref = ray.put(shared)
        pending = [remote.remote(ref, it) for it in items]
        order = {r: i for i, r in enumerate(pending)}
        out = [None] * len(items)
        with tqdm(total=len(items), disable=not progress, desc=f"{desc} (ray)") as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                out[order[done[0]]] = ray.get(done[0])
                bar.update(1)
        return out

    def shutdown(self):
        self.ray.shutdown()


def get(executor=None):
    """An executor from ``None`` / ``"local"`` / ``"ray"`` / ``"ray://..."`` / ``"auto"``, or one passed through."""
    if executor is None or executor == "local":
        return InProcess()
    if isinstance(executor, str):
        if executor == "ray":
            return Ray()
        if executor.startswith("ray://") or executor == "auto":
            return Ray(address=executor)
        raise UnknownNameError("executor", executor, ["None or 'local' (in-process)", "'ray' (local Ray)",
                                                      "'auto' or 'ray://host:port' (a Ray cluster)",
                                                      "an object with a map() method"])
    if not callable(getattr(executor, "map", None)):
        raise TypeError(f"executor {executor!r} has no map(fn, shared, items) method")
    return executor
