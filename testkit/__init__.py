"""What the tests and the benchmarks share: hand-made data (``data``), the fault and hostile-input
cases of the reliability matrix (``faults``), and the real-browser helpers (``browser``).
Installed with the project, so a benchmark imports it without editing ``sys.path``."""
