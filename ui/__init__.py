"""Dashboard helpers shared by the pages: ``state`` (store, job manager, current dataset/model/curator,
sidebar) and ``widgets`` (actions with one-sentence errors, "what to do next" notes, summaries).
Only the dashboard imports this package; ``mmae_core`` and ``store`` never do."""
