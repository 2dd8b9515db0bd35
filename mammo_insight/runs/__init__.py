"""The run contract: a trained run's settings, its folder, and every kind of run opened behind one protocol."""
