# A fake DM entry script, written for dream-plugin's tests.
import numpy as np
import torch


def main(args, dataset, get_network):
    channel, num_classes, im_size = 1, args.classes, (8, 8)
    for exp in range(args.num_exp):
        images_all = torch.stack([x for x, _ in dataset])
        indices_class = [[] for _ in range(args.classes)]
        for i, (_, y) in enumerate(dataset):
            indices_class[y].append(i)

        def get_images(c, n):  # n random images of class c
            chosen = np.random.permutation(indices_class[c])[:n]
            return images_all[chosen]

        syn = torch.zeros(args.classes * args.ipc, *images_all.shape[1:])
        for c in range(args.classes):
            syn[c * args.ipc:(c + 1) * args.ipc] = get_images(c, args.ipc)
        for it in range(args.Iteration):
            net = get_network(args.model, channel, num_classes, im_size).to(args.device)
            if 'BN' not in args.model:
                for c in range(args.classes):
                    real = get_images(c, args.batch_real)
                    net.embed(real)
            else:
                parts = [get_images(c, args.batch_real) for c in range(args.classes)]
                net.embed(torch.cat(parts))
    return syn
