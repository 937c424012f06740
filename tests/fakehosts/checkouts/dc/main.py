# A fake DC/DSA entry script, written for dream-plugin's tests: the get_images contract only.
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
            BNSizePC = 16
            if any('BatchNorm' in type(m).__name__ for m in net.modules()):
                net(torch.cat([get_images(c, BNSizePC) for c in range(args.classes)]))
            for c in range(args.classes):
                real = get_images(c, args.batch_real)
                assert real.shape[0] == args.batch_real
    return syn
