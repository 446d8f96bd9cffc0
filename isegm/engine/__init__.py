"""Training: the iterative click trainer, its optimizers, recipes and experiment folders."""
