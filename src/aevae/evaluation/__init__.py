"""The measures behind aevae-eval, one small module per claim of the tutorial."""
