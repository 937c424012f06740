# A fake IDC condense script, written for dream-plugin's tests: the class-loader contract only.
import torch

MEANS = {'fake': [0.5]}
STDS = {'fake': [0.25]}


def condense(args, trainset, loader_real, synset, define_model, device='cpu'):
    nclass = trainset.nclass
    synset.init(loader_real, init_type=args.init)
    for it in range(args.niter):
        model = define_model(args, nclass).to(device)
        for c in range(nclass):
            img, lab = loader_real.class_sample(c)
    return synset
