def view_fix_needed(out):
    out = out.view(out.size(0), -1)
    return out
