"""Rewriting mask files in place or elsewhere (remap and repair): plan, run record, per-file
apply, repair of lossy artifacts."""
