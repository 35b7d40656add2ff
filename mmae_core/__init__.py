"""MMAE Studio's core: data, the model and its training, evaluation, clustering, archive scores and
search, in plain Python (no Streamlit, no store).

Importing the package asks OpenMP to let idle worker threads sleep (``OMP_WAIT_POLICY=PASSIVE``)
unless the environment already says otherwise. Why: torch's ops are short at our sizes, and by
default OpenMP's threads spin at the end of each one; when another program holds a core, every op
then waits for a thread that is not running. Measured on the 2-core machine under a load of about 5:
a batch-128 training step took 983 ms with two threads spinning and 14.7 ms with two sleeping
(``benchmarks/train_speed.py --part threads``; training itself uses one thread, ``model/train.py``).
The setting must be in the environment before torch's OpenMP runtime loads, so it is made here, in
the first module any entry point (the CLI, the dashboard, the tests) imports.
"""
import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
