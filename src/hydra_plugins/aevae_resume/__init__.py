"""aevae's Hydra plugin: the sweeper behind `aevae-train resume=SWEEP_DIR` (Hydra looks for its
plugins in the `hydra_plugins` namespace package only)."""
