# A fake official-DREAM condense script, written for dream-plugin's tests.
import numpy as np
import torch

MEANS = {'fake': [0.5]}
STDS = {'fake': [0.25]}
from picker import NEW_Strategy


def condense(args, trainset, loader_real, synset, define_model, device='cpu'):
    nclass = trainset.nclass
    kept = [loader_real.class_sample(c, trainset.class_size(c))[0] for c in range(nclass)]
    model = define_model(args, nclass).to(device)
    picks = [None] * nclass
    for it in range(args.niter):
        for ot in range(args.inner_loop):
            for c in range(nclass):
                if ot % args.interval == 0:
                    strategy = NEW_Strategy(kept[c], model)
                    picks[c] = strategy.query(args.batch_real)
                img = kept[c][picks[c]]
                lab = torch.tensor([np.ones(img.size(0))*c], dtype=torch.long, device=device).view(-1)
                assert img.shape[0] == lab.shape[0]
    return synset
