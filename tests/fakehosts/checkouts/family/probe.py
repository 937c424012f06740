# A fake DC-family script whose sampler is asked for a size none of the contract's names say,
# written for dream-plugin's tests.
import numpy as np
import torch


def main(args, images_all, indices_class, get_network):
    def get_images(c, n):
        return images_all[np.random.permutation(indices_class[c])[:n]]

    net = get_network(args.model, 1, args.classes, (8, 8))
    return [get_images(c, 1) for c in range(args.classes)] + [get_images(c, args.ipc) for c in range(args.classes)]
