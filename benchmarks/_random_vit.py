"""The ImageNet-size classifier the GPU check and the plane benchmark share: an open_clip image tower with random
weights (no download) behind a 10-class head, and a loss-landscape plane through it and two small perturbations."""
import torch

from fmcls_lib import finetune, landscape


def classifier_and_plane(arch: str = "ViT-B-32", device="cpu", classes: int = 10):
    import logging

    import open_clip

    logging.disable(logging.WARNING)  # open_clip's "no pretrained weights loaded" notice is the point here
    torch.manual_seed(0)
    visual = open_clip.create_model(arch, pretrained=None).visual.to(device).eval()
    W = torch.nn.functional.normalize(torch.randn(classes, visual.output_dim), dim=-1)
    clf = finetune.ImageClassifier(visual, 100 * W).to(device).eval()
    sd = {k: v.detach().clone() for k, v in clf.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    other = [{k: v + 0.001 * torch.randn(v.shape, generator=g).to(v) if v.is_floating_point() else v
              for k, v in sd.items()} for _ in range(2)]
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    return clf, landscape.plane(sd, *other, [k for k, _ in clf.named_parameters()]), size
