# A fake official-DREAM condense script, written for dream-plugin's tests.
import numpy as np
import torch

MEANS = {'fake': [0.5]}
STDS = {'fake': [0.25]}
from picker import NEW_Strategy


def condense(args, trainset, loader_real, synset, define_model, device='cpu'):
    nclass = trainset.nclass
    img_class = [loader_real.class_sample(c, trainset.class_size(c))[0] for c in range(nclass)]
    model = define_model(args, nclass).to(device)
    query_list = [None] * nclass
    for it in range(args.niter):
        for ot in range(args.inner_loop):
            for c in range(nclass):
                # the replaced region, statement by statement as the contract (docs/hosts/dream-official.md) says
                if ot % args.interval == 0:

                    img = img_class[c]

                    strategy = NEW_Strategy(img, model)

                    query_idxs = strategy.query(args.batch_real)

                    query_list[c] = query_idxs

                images_all = img_class[c]
                img = images_all[query_list[c]]
                lab = torch.tensor([np.ones(img.size(0))*c], dtype=torch.long, requires_grad=False, device=device).view(-1)
                assert img.shape[0] == lab.shape[0]
    return synset
