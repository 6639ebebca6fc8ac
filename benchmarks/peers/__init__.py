"""Side-by-side benchmark of byzance against ByzFL (``make bench-peers``).

Times ByzFL's and byzance's implementation of every rule both libraries have,
on the same inputs in the same process, checks that their outputs agree where
their definitions agree, and times one simulated training step of each
library's training loop. Runs in its own virtual environment (``.venv-peers``)
where ByzFL is installed without torchvision (see :mod:`.byzfl_loader`).

Modules: ``byzfl_loader`` (import ByzFL's math without its package
``__init__``), ``timing`` (timing and agreement), ``rules`` (the shared rules
and how each side is called), ``step`` (the simulated training step),
``report`` (markdown), ``__main__`` (the command).
"""
