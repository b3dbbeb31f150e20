"""World rendering throughput, per domain (images per second on this machine, one process)."""
import time

from fmcls_lib import world


def main(n: int = 2000):
    scenes = world.pretrain_scenes(n)
    for domain in world.DOMAINS:
        batch = [world.Scene(s.shape, s.color, s.size, domain, s.angle, s.dx, s.dy, s.seed) for s in scenes]
        t = time.perf_counter()
        world.render_many(batch)
        print(f"render {domain:9s}: {n / (time.perf_counter() - t):7.0f} images/s")
    t = time.perf_counter()
    world.pretrain_pairs(n)
    print(f"pre-training pairs (scene + render + caption): {n / (time.perf_counter() - t):7.0f} pairs/s")


if __name__ == "__main__":
    main()
