def noop(x):
    return x
