# A fake DC-family trajectory-matching script (initialisation from real images and a label-aware
# pass over whole classes; the network built in two ways), written for dream-plugin's tests.
import numpy as np
import torch


def main(args, images_all, indices_class, get_network):
    channel, num_classes, im_size = 1, args.classes, (8, 8)

    def get_images(c, n):  # n random images of class c
        pool = indices_class[c]
        order = np.random.permutation(len(pool))
        return images_all[[pool[i] for i in order[:n]]]

    syn = torch.zeros(num_classes * args.ipc, *images_all.shape[1:])
    if args.pix_init == 'real':
        for c in range(num_classes):
            syn[c * args.ipc:(c + 1) * args.ipc] = get_images(c, args.ipc)
    else:
        device = args.device
        temp_net = get_network(args.model, channel, num_classes, im_size, dist=False).to(device)
        for c in range(num_classes):
            data_for_class_c = get_images(c, len(indices_class[c]))
            keep = temp_net(data_for_class_c).argmax(1).argsort()[:args.ipc]  # stands for 'predicted correctly'
            syn[c * args.ipc:(c + 1) * args.ipc] = data_for_class_c[keep]
    student_net = get_network(args.model, channel, num_classes, im_size, dist=False).to(args.device)
    return syn
