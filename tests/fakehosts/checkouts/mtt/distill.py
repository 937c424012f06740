# A fake MTT distill script, written for dream-plugin's tests.
import numpy as np
import torch


def main(args, images_all, indices_class, get_network):
    channel, num_classes, im_size = 1, args.classes, (8, 8)
    def get_images(c, n):  # n random images of class c
        return images_all[np.random.permutation(indices_class[c])[:n]]

    syn = torch.zeros(args.classes * args.ipc, *images_all.shape[1:])
    if args.pix_init == 'real':
        for c in range(args.classes):
            syn[c * args.ipc:(c + 1) * args.ipc] = get_images(c, args.ipc)
    return syn
