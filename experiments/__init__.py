"""Scripts that run (or read) the training runs behind the paper's tables and print them beside the paper's numbers.

    python -m experiments.table1 --preset cpu_tiny     # main results (per-type success, WebShop score/success)
    python -m experiments.table2 --preset cpu_tiny     # the ablation grid
    python -m experiments.table3 --preset cpu_tiny     # s/step and library size at steps 20/60/100

See ``docs/experiments.md``.
"""
