"""The console commands: aevae-train (with its sweeps and summaries), -eval, -sample, -compare,
-export, -bench, and the help pages they share (cli)."""
