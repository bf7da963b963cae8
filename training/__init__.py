"""DTPR trainer: two-stage training (PRA pixel sampling) for the human parsing networks."""
