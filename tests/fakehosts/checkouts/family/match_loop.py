# A fake DC-family script (distribution-matching shape, a sampler with defaults and an all-class branch),
# written for dream-plugin's tests from the contract in docs/hosts/family.md.
import numpy as np
import torch


def main(args, images_all, labels_all, indices_class, get_network):
    channel, num_classes, im_size = 1, args.classes, (8, 8)
    for exp in range(args.num_exp):
        def get_images(c=None, n=0):  # n random images of class c, or of every class with labels
            if c is None:
                drawn = np.random.choice(len(labels_all), size=n, replace=False)
                return images_all[drawn], labels_all[drawn]
            pool = indices_class[c]
            order = np.random.permutation(len(pool))
            return images_all[[pool[i] for i in order[:n]]]

        syn = torch.zeros(num_classes * args.ipc, *images_all.shape[1:])
        for c in range(num_classes):
            syn[c * args.ipc:(c + 1) * args.ipc] = get_images(c, args.ipc)
        seen = []
        for it in range(args.Iteration):
            net = get_network(args.model, channel, num_classes, im_size).to(args.device)
            BNSizePC = 16
            if any('BatchNorm' in type(m).__name__ for m in net.modules()):
                net(torch.cat([get_images(c, BNSizePC) for c in range(num_classes)]))
            for c in range(num_classes):
                real = get_images(c, args.batch_real)
                seen.append(real)
            img, lab = get_images(c=None, n=args.trained_bs)
            seen.append(img)
    return syn, seen
